"""A run's trail as rows for auditors: CSV or JSON Lines, streamed.

One row per checkpoint in id order (the order they were appended, which is the order of the
hash chain). Times are UTC in ISO 8601 with the offset written out, so an export reads the
same whatever zone the viewer or the server is in (DESIGN.md, invariant 9).

The web download view passes its response as `out`; the export_trail command passes a file or
standard output. Neither access nor hashing is decided here: callers fetch the run through
accounts.access first.
"""

import csv
import json
from collections.abc import Iterator
from datetime import UTC
from typing import Any, TextIO

from board.models import Checkpoint, Run

COLUMNS = (
    "run", "seq", "time", "kind", "item_position", "item_title", "actor", "token", "reason",
    "data",
)
FORMATS = ("csv", "jsonl")
# Large enough to keep round trips few on a trail of millions of rows, small enough that a
# chunk of checkpoints with their items stays a few megabytes in memory.
CHUNK_SIZE = 2000


def trail_rows(run: Run) -> Iterator[dict[str, Any]]:
    """The run's checkpoints as export rows, oldest first, fetched in chunks.

    `item_position` and `token` are None when the checkpoint has none (run-level events,
    events without a claim); `item_title` is then the empty string. CSV writes None as an
    empty cell; JSON Lines keeps it as null so the numbers stay numbers. `data` is an object
    in JSON Lines and that object as JSON text in CSV.
    """
    checkpoints = (
        Checkpoint.objects.filter(run_id=run.pk)
        .select_related("item")
        .only(
            "id", "run_id", "at", "kind", "actor_name", "token", "reason", "data",
            "item__position", "item__title",
        )
        .order_by("id")
    )
    for seq, checkpoint in enumerate(checkpoints.iterator(chunk_size=CHUNK_SIZE), start=1):
        item = checkpoint.item
        yield {
            "run": checkpoint.run_id,
            "seq": seq,
            # Always six fractional digits, so every time has the same shape for parsers.
            "time": checkpoint.at.astimezone(UTC).isoformat(timespec="microseconds"),
            "kind": checkpoint.kind,
            "item_position": item.position if item else None,
            "item_title": item.title if item else "",
            "actor": checkpoint.actor_name,
            "token": checkpoint.token,
            "reason": checkpoint.reason,
            # What the event recorded besides: a push's target and the claims it revoked, a
            # restart's step, a launch's facts and mode, the items a completion unlocked.
            "data": checkpoint.data,
        }


def trail_export(*, run: Run, fmt: str, out: TextIO) -> None:
    """Write the run's trail to `out` as "csv" (with a header row) or "jsonl"."""
    if fmt not in FORMATS:
        raise ValueError(
            f"Unknown trail export format {fmt!r}: choose one of {', '.join(FORMATS)}."
        )
    rows = trail_rows(run)
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            row["data"] = json.dumps(row["data"], ensure_ascii=False, sort_keys=True)
            writer.writerow({column: _spreadsheet_safe(value) for column, value in row.items()})
    else:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV
# injection"): a reason typed as =HYPERLINK(...) must reach the auditor as text.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _spreadsheet_safe(value: Any) -> Any:
    """Text that a spreadsheet would take for a formula, quoted with a leading apostrophe
    (the convention spreadsheets show as plain text); JSON Lines keeps the text as it is."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value
