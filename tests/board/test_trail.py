"""Trail export: one row per checkpoint, exact columns, UTC times with offset, no N+1."""

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.http import HttpResponse
from django.utils import timezone

from board.models import Checkpoint, CheckpointKind
from board.services import (
    checkpoint_append,
    item_abandon,
    item_claim_next,
    item_complete,
)
from board.trail import COLUMNS, trail_export, trail_rows

T0 = datetime(2026, 12, 3, 19, 4, 5, 123456, tzinfo=UTC)

TWO_STEPS = """\
---
title: Two steps
---
# Two steps

1. Freeze writes, then "wait"
2. Snapshot the primary
"""

HEADER = "run,seq,time,kind,item_position,item_title,actor,token,reason,data"


@pytest.fixture
def worked_run(make_runbook, make_run, staff, teammate):
    """A run with run-level and item checkpoints, at known times, in a non-UTC zone."""
    with time_machine.travel(T0, tick=False):
        run = make_run(runbook=make_runbook(TWO_STEPS, filename="two.md"))
    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        first = item_claim_next(actor=staff)
    with time_machine.travel(T0 + timedelta(minutes=2), tick=False):
        item_abandon(item_id=first.pk, token=first.token, actor=staff,
                     reason='wrong host, "db-2"\nretrying')
    with time_machine.travel(T0 + timedelta(minutes=3), tick=False):
        again = item_claim_next(actor=teammate)
    with time_machine.travel(T0 + timedelta(minutes=4, microseconds=-123456), tick=False):
        item_complete(item_id=again.pk, token=again.token, actor=teammate)
    return run


@pytest.fixture
def new_york(settings):
    # Exports must be UTC whatever the server's or the viewer's zone is.
    settings.TIME_ZONE = "America/New_York"
    with timezone.override("Asia/Tokyo"):
        yield


def expected_rows(run) -> list[dict]:
    launched = Checkpoint.objects.get(run=run, kind=CheckpointKind.LAUNCHED).data
    assert launched["runbook"] == run.runbook.slug and launched["mode"] == "pull"
    second = run.items.get(position=2).pk  # unlocked by completing the first
    return [
        {"run": run.pk, "seq": 1, "time": "2026-12-03T19:04:05.123456+00:00",
         "kind": "launched", "item_position": None, "item_title": "", "actor": "maya",
         "token": None, "reason": "", "data": launched},
        {"run": run.pk, "seq": 2, "time": "2026-12-03T19:05:05.123456+00:00",
         "kind": "claimed", "item_position": 1, "item_title": 'Freeze writes, then "wait"',
         "actor": "sam", "token": 1, "reason": "",
         "data": {"lease_expires_at": "2026-12-03T19:20:05.123456+00:00"}},
        {"run": run.pk, "seq": 3, "time": "2026-12-03T19:06:05.123456+00:00",
         "kind": "abandoned", "item_position": 1, "item_title": 'Freeze writes, then "wait"',
         "actor": "sam", "token": 1, "reason": 'wrong host, "db-2"\nretrying',
         "data": {"attempts": 1}},
        {"run": run.pk, "seq": 4, "time": "2026-12-03T19:07:05.123456+00:00",
         "kind": "claimed", "item_position": 1, "item_title": 'Freeze writes, then "wait"',
         "actor": "tia", "token": 2, "reason": "",
         "data": {"lease_expires_at": "2026-12-03T19:22:05.123456+00:00"}},
        {"run": run.pk, "seq": 5, "time": "2026-12-03T19:08:05.000000+00:00",
         "kind": "completed", "item_position": 1, "item_title": 'Freeze writes, then "wait"',
         "actor": "tia", "token": 2, "reason": "", "data": {"unlocked": [second]}},
    ]


def test_trail_rows_have_exact_columns_seq_and_utc_times(worked_run, new_york):
    rows = list(trail_rows(worked_run))

    assert all(tuple(row) == COLUMNS for row in rows)
    assert COLUMNS == tuple(HEADER.split(","))
    assert rows == expected_rows(worked_run)
    assert all(datetime.fromisoformat(row["time"]).utcoffset() == timedelta(0) for row in rows)


def test_csv_export_has_header_and_one_row_per_checkpoint(worked_run, new_york):
    out = io.StringIO(newline="")

    trail_export(run=worked_run, fmt="csv", out=out)

    r = worked_run.pk
    lines = out.getvalue().split("\r\n")
    launched = json.dumps(Checkpoint.objects.get(run=worked_run, kind="launched").data,
                          sort_keys=True).replace('"', '""')
    assert lines == [
        HEADER,
        f'{r},1,2026-12-03T19:04:05.123456+00:00,launched,,,maya,,,"{launched}"',
        f'{r},2,2026-12-03T19:05:05.123456+00:00,claimed,1,"Freeze writes, then ""wait""",sam,1,,'
        '"{""lease_expires_at"": ""2026-12-03T19:20:05.123456+00:00""}"',
        f'{r},3,2026-12-03T19:06:05.123456+00:00,abandoned,1,"Freeze writes, then ""wait""",sam,1,'
        '"wrong host, ""db-2""\nretrying","{""attempts"": 1}"',
        f'{r},4,2026-12-03T19:07:05.123456+00:00,claimed,1,"Freeze writes, then ""wait""",tia,2,,'
        '"{""lease_expires_at"": ""2026-12-03T19:22:05.123456+00:00""}"',
        f'{r},5,2026-12-03T19:08:05.000000+00:00,completed,1,"Freeze writes, then ""wait""",tia,2,,'
        f'"{{""unlocked"": [{worked_run.items.get(position=2).pk}]}}"',
        "",
    ]
    parsed = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    assert [row["reason"] for row in parsed][2] == 'wrong host, "db-2"\nretrying'


def test_jsonl_export_has_one_json_object_per_line(worked_run, new_york):
    out = io.StringIO()

    trail_export(run=worked_run, fmt="jsonl", out=out)

    lines = out.getvalue().split("\n")
    assert lines[-1] == ""
    assert [json.loads(line) for line in lines[:-1]] == expected_rows(worked_run)


def test_run_level_checkpoints_have_an_empty_item(worked_run, staff):
    checkpoint_append(
        run_id=worked_run.pk, kind=CheckpointKind.RUN_CANCELLED, actor=staff, reason="dup"
    )

    last = list(trail_rows(worked_run))[-1]

    assert (last["seq"], last["kind"], last["item_position"], last["item_title"],
            last["token"], last["reason"]) == (6, "run_cancelled", None, "", None, "dup")


def test_csv_quotes_text_a_spreadsheet_would_run_as_a_formula(make_run, staff):
    run = make_run()
    item = item_claim_next(actor=staff)
    item_abandon(item_id=item.pk, token=item.token, actor=staff,
                 reason='=HYPERLINK("http://evil.example","click")')
    csv_out, jsonl_out = io.StringIO(), io.StringIO()

    trail_export(run=run, fmt="csv", out=csv_out)
    trail_export(run=run, fmt="jsonl", out=jsonl_out)

    csv_reason = list(csv.DictReader(io.StringIO(csv_out.getvalue())))[-1]["reason"]
    assert csv_reason == "'=HYPERLINK(\"http://evil.example\",\"click\")"
    jsonl_reason = json.loads(jsonl_out.getvalue().splitlines()[-1])["reason"]
    assert jsonl_reason == '=HYPERLINK("http://evil.example","click")'


def test_seq_counts_within_the_run_only(worked_run, make_run):
    other = make_run(title="another incident")

    assert [row["seq"] for row in trail_rows(other)] == [1]
    assert [row["run"] for row in trail_rows(other)] == [other.pk]
    assert [row["seq"] for row in trail_rows(worked_run)] == [1, 2, 3, 4, 5]


def test_export_writes_into_an_http_response(worked_run):
    # The download view hands its response to trail_export as the output.
    response = HttpResponse(content_type="text/csv; charset=utf-8")

    trail_export(run=worked_run, fmt="csv", out=response)

    text = response.content.decode()
    assert text.startswith(HEADER + "\r\n")
    assert text.count("\r\n") == 1 + 5  # the newline inside a reason stays a bare \n


def test_unknown_format_is_refused_and_writes_nothing(worked_run):
    out = io.StringIO()

    with pytest.raises(ValueError, match="'xml'.*csv, jsonl"):
        trail_export(run=worked_run, fmt="xml", out=out)

    assert out.getvalue() == ""


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_of_a_long_trail_uses_a_fixed_number_of_queries(
    make_run, staff, django_assert_max_num_queries, fmt
):
    run = make_run()
    items = list(run.items.all())
    for number in range(300):
        checkpoint_append(
            run_id=run.pk, kind=CheckpointKind.EXTENDED, actor=staff,
            item_id=items[number % len(items)].pk, token=number,
        )
    out = io.StringIO()

    # One SELECT with the items joined, however long the trail (server-side cursors on
    # PostgreSQL may add a statement or two, never one per row).
    with django_assert_max_num_queries(3):
        trail_export(run=run, fmt=fmt, out=out)

    lines = out.getvalue().splitlines()
    assert len(lines) == 301 + (1 if fmt == "csv" else 0)
