"""The runbook parser: Markdown and YAML in, ParsedRunbook out. No database needed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checklists.parsing import (
    MAX_BYTES,
    ParsedRunbook,
    RunbookFormatError,
    parse_runbook,
)

# The repository root's sibling folder: the sample runbooks are shared, never copied here.
RUNBOOKS = Path(__file__).resolve().parents[2].parent / "shared" / "runbooks"
SHARED_MARKDOWN = sorted(p.name for p in RUNBOOKS.glob("*.md") if p.name != "SOURCES.md")
XSOAR = RUNBOOKS / "foreign-formats" / "xsoar-ransomware-playbook-manual.yml"


def parse_md(text: str, filename: str = "runbook.md") -> ParsedRunbook:
    return parse_runbook(text.encode(), filename)


def parse_shared(name: str) -> ParsedRunbook:
    return parse_runbook((RUNBOOKS / name).read_bytes(), name)


def titles(runbook: ParsedRunbook) -> list[str]:
    return [step.title for step in runbook.steps]


def afters(runbook: ParsedRunbook) -> dict[str, list[str]]:
    return {step.key: step.after for step in runbook.steps}


def format_error(data: bytes | str, filename: str = "runbook.md") -> str:
    """Parse what must be refused; return the message after checking it is one line."""
    raw = data.encode() if isinstance(data, str) else data
    with pytest.raises(RunbookFormatError) as caught:
        parse_runbook(raw, filename)
    message = str(caught.value)
    assert message and "\n" not in message and "Traceback" not in message
    return message


# --- the shared sample runbooks -------------------------------------------------------


def test_shared_runbooks_folder_is_there():
    assert RUNBOOKS.is_dir(), f"expected the sample runbooks at {RUNBOOKS}"
    assert len(SHARED_MARKDOWN) >= 17


@pytest.mark.parametrize("name", SHARED_MARKDOWN)
def test_every_shared_runbook_imports_quickly_with_known_prerequisites(name):
    started = time.perf_counter()
    runbook = parse_shared(name)
    elapsed = time.perf_counter() - started

    assert elapsed < 0.5, f"{name} took {elapsed:.2f}s"
    assert runbook.steps
    assert runbook.title and runbook.slug
    keys = [step.key for step in runbook.steps]
    assert len(set(keys)) == len(keys)
    for step in runbook.steps:
        assert step.title and len(step.title) <= 200 and "\n" not in step.title
        assert set(step.after) <= set(keys)
        assert step.key not in step.after


def test_xsoar_playbook_is_refused_with_a_clear_message():
    message = format_error(XSOAR.read_bytes(), XSOAR.name)
    assert "not a Pullboard runbook" in message
    assert "'steps'" in message and "XSOAR" in message


# Hand counts. Each number below was counted by reading the file (cat -n), applying the
# import rules: one step per top-level list item (nested items are body), one step per
# section with content but no list, empty sections ignored, text before the first section
# is the description.


def test_gitlab_cmoc_checklist_hand_count():
    # "## Shift Start" is empty (ignored). "## Declaring an Incident": a note line, then 9
    # "- [ ]" items (lines 10-12, 14-19; the "*" lines under 12 and 19 are nested).
    # "## Taking Ownership of an Incident" holds only "The CMOC " -> 1 step. 9 + 1 = 10.
    runbook = parse_shared("gitlab-cmoc-checklist.md")
    assert runbook.title == "CMOC Checklist"
    assert len(runbook.steps) == 10
    assert titles(runbook)[:2] == [
        "For the CMOC - post in #incident-management that you are the CMOC - "
        "cross post to #support_gitlab-com if needed",
        "Create the production issue if possible.  In slack:  `/start-incident` or if you "
        "have an alert in alerts-general - click the Open Issue button in the thread.",
    ]
    assert titles(runbook)[-1] == "Taking Ownership of an Incident"
    assert runbook.steps[-1].body == "The CMOC "
    assert {step.section_note for step in runbook.steps[:9]} == {
        "checklist for starting and incident:"
    }
    # Phased: the last section waits for all nine tasks of the one before.
    assert runbook.steps[-1].after == [str(n) for n in range(1, 10)]


def test_prometheus_info_inhibitor_hand_count():
    # No list at all: four "##" sections of prose (Meaning, Impact, Diagnosis, Mitigation),
    # each one step titled by its heading. Title from front matter, not the H1.
    runbook = parse_shared("prometheus-info-inhibitor.md")
    assert runbook.title == "Info Inhibitor"
    assert titles(runbook) == ["Meaning", "Impact", "Diagnosis", "Mitigation"]
    assert "<details>" in runbook.steps[0].body
    assert runbook.warnings == ["unknown front-matter key 'weight' ignored"]


def test_prometheus_kube_api_down_hand_count():
    # Meaning (prose) 1, Impact (prose) 1, Diagnosis: prose and two shell blocks (its note)
    # then 4 bullets, Mitigation (prose) 1. 1 + 1 + 4 + 1 = 7.
    runbook = parse_shared("prometheus-kube-api-down.md")
    assert runbook.title == "Kube API Down"
    assert runbook.slug == "kube-api-down"
    assert len(runbook.steps) == 7
    assert titles(runbook)[:3] == ["Meaning", "Impact", "Check networking on the node."]
    assert titles(runbook)[-1] == "Mitigation"
    assert runbook.steps[2].section_note.startswith("Check the status of the API server")
    assert "kubectl cluster-info" in runbook.steps[2].section_note


def test_gitlab_gitaly_token_rotation_hand_count():
    # "## Execution", top-level "- [ ]" items at lines 6, 18, 19, 24, 28, 29, 30, 31, 34,
    # then line 38 " - https://..." (indent 1: a new list after the paragraph on line 37),
    # line 39 "  - [ ] This should..." (indent 2 < content column 3 of line 38, so a sibling,
    # not a child), lines 40 and 41: 13 items. Lines 20-21, 25-27, 32-33 are nested.
    # "## Rollback" is prose only: 1 step. 13 + 1 = 14.
    runbook = parse_shared("gitlab-gitaly-token-rotation.md")
    assert runbook.title == "Gitaly token rotation"
    assert len(runbook.steps) == 14
    assert titles(runbook)[1:3] == [
        "apply the changes to the gitaly servers. "
        "`knife ssh -C3 roles:gprd-base-stor-gitaly 'sudo chef-client'`",
        "Ensure that `gitaly_authentications_total` is set to true in prometheus and that "
        '100% of all requests are "unenforced"',
    ]
    assert titles(runbook)[10] == "This should be equal to the number of gitaly nodes"
    assert titles(runbook)[-1] == "Rollback"
    # The JSON fence at column 0 after the first task ends that list: body of step 1.
    assert runbook.steps[0].body.startswith("```json")
    # Prose between two lists belongs to the step before it.
    assert runbook.steps[2].body.endswith("Backup and replace the current `auth_token`")


def test_openshift_virt_launcher_hand_count():
    # Meaning (prose) 1; Impact: 5 bullets; Diagnosis: numbered 1-5, then 3 bullets at
    # column 0 after item 5 (not indented, so a new top-level list) = 8; Mitigation:
    # numbered 1-4 (the prose after them is item 4's body). 1 + 5 + 8 + 4 = 18.
    runbook = parse_shared("openshift-virt-launcher-pods-stuck-failed.md")
    assert runbook.title == "VirtLauncherPodsStuckFailed"
    assert len(runbook.steps) == 18
    assert titles(runbook)[:3] == [
        "Meaning",
        "API server and etcd pressure (large object lists/watches, increased latency)",
        "Controller and scheduler slowdown (reconciliation over huge Pod sets)",
    ]
    assert titles(runbook)[11] == (
        "Image pulls: registry reachability/credentials; `ImagePullBackOff` events"
    )
    # The numbered Diagnosis list is a chain; the loose bullets wait only for Impact.
    impact = ["2", "3", "4", "5", "6"]
    assert runbook.steps[6].after == impact
    assert [runbook.steps[n].after for n in range(7, 11)] == [["7"], ["8"], ["9"], ["10"]]
    assert runbook.steps[11].after == impact
    # Bodies are dedented: the fences were indented 4 under "1. ".
    assert runbook.steps[6].body.startswith("```promql\ncluster:kubevirt_virt_launcher_failed")
    assert runbook.steps[-1].body.endswith("procedure.")


def test_pagerduty_security_incident_response_hand_count():
    # Front matter without title and no H1: title from the file name. The HTML block and
    # admonitions before "## Checklist" are no step. Checklist: 14 "1." items (lines 19-32).
    # Then bullets per section: Attack Mitigation 2, Cut Off Attack Vector 2, Assemble
    # Response Team 7 (lines 55-59, 63, 64), Isolate 3, Timeline 6, Compromised Data 2,
    # Assess Risk 3, Additional Mitigations 4, Forensic Analysis 4, Internal
    # Communication 4, Law Enforcement 5, External Communication 8, Communicating During
    # an Incident 4 (lines 154, 155, 158, 160), Additional Reading 5.
    # 14+2+2+7+3+6+2+3+4+4+4+5+8+4+5 = 73.
    runbook = parse_shared("pagerduty-security-incident-response.md")
    assert runbook.title == "pagerduty-security-incident-response"
    assert runbook.description == (
        "Checklist of actions for responding to a security incident at PagerDuty."
    )
    assert len(runbook.steps) == 73
    assert titles(runbook)[:3] == [
        "Stop the attack in progress.",
        "Cut off the attack vector.",
        "Assemble the response team.",
    ]
    # The 14 numbered items form a chain.
    assert [runbook.steps[n].after for n in range(4)] == [[], ["1"], ["2"], ["3"]]


def test_pagerduty_japanese_translation_hand_count():
    # Same structure line for line as the English file (the list lines are at the same
    # line numbers): 73 steps.
    runbook = parse_shared("pagerduty-security-incident-response.ja.md")
    assert len(runbook.steps) == 73
    assert titles(runbook)[:3] == [
        "進行中の攻撃を停止する。",
        "攻撃経路を遮断する。",
        "対応チームを編成する。",
    ]
    # A Japanese title slugifies to nothing: the slug falls back to the file name.
    assert runbook.slug == "pagerduty-security-incident-responseja"


def test_cloudgov_security_ir_checklist_hand_count():
    # Initiate 1 (line 16), Assess 5 (21, 24, 25, 29, 30), Remediate 5 + 4 (37, 40, 43,
    # 44, 45; "Once the incident is resolved:" goes to the body of 45; then 49-52),
    # Special Situations (prose only) 1, False Alarm 4, Handing off IC 5, Network
    # Interconnect 4, Github Secret Leak (prose; the "---" after it is no content) 1,
    # Page information 3. 1+5+9+1+4+5+4+1+3 = 33.
    runbook = parse_shared("cloudgov-security-ir-checklist.md")
    assert runbook.title == "Security Incident Response checklist"
    assert len(runbook.steps) == 33
    assert titles(runbook)[1:3] == [
        "Confirm the incident — was it a real incident?",
        "Assess the severity, using [the rubric in the IR guide]({{ site.baseurl }}"
        "{% link _docs/ops/security-ir.md %}#incident-severities).",
    ]
    assert runbook.steps[20].title == "Old IC: brief New IC on the situation."
    assert runbook.steps[20].section == "Special Situations / Handing off IC"
    assert runbook.description.startswith("*This is a short, actionable checklist")
    assert "Once the incident is resolved:" in runbook.steps[10].body
    assert "unknown front-matter key 'layout' ignored" in runbook.warnings


def test_prometheus_kube_persistent_volume_filling_up_hand_count():
    # Meaning, Impact, Diagnosis: prose, 1 each. "## Mitigation" goes straight to "###":
    # empty, ignored. Data retention 1, Data export 1, Data rebalance 7 bullets, Direct
    # Volume resizing 1, Migrate to a larger volume 1, Purge volume 1, larger instance pool
    # 3 bullets, larger cluster 7 bullets. 3 + 1 + 1 + 7 + 1 + 1 + 1 + 3 + 7 = 25.
    runbook = parse_shared("prometheus-kube-persistent-volume-filling-up.md")
    assert runbook.title == "Kube Persistent Volume Filling Up"
    assert len(runbook.steps) == 25
    assert titles(runbook)[:4] == ["Meaning", "Impact", "Diagnosis", "Data retention"]
    assert runbook.steps[3].section == "Mitigation / Data retention"


def test_gitlab_deleted_project_restore_hand_count():
    # Line 1 is the title H1. Line 3 "# You should not perform this action!" is a later H1:
    # a section with prose only -> 1 step (SOURCES.md estimates about 43; by the rules this
    # one counts, and every "##" below nests under it). Introduction 1, Background 1,
    # Part 1: 3 numbered (33-35); Special procedure: 3 + 2 numbered (50-52, 56-57);
    # Restore full database backup: 11 numbered (68, 70-78, 81) + 5 (85-93); Export
    # project: 2 (110-111); Part 2: prose only 1; Restoring from Disk Snapshot: 10
    # numbered (233-259); Part 3: prose 1; "# Troubleshooting" is empty (straight to
    # "##"), its three sub-sections are prose, 3.
    # 1+1+1+3+5+16+2+1+10+1+3 = 44.
    runbook = parse_shared("gitlab-deleted-project-restore.md")
    assert runbook.title == "Deleted Project Restoration"
    assert len(runbook.steps) == 44
    assert titles(runbook)[:4] == [
        "You should not perform this action!",
        "Introduction",
        "Background",
        "Restore a full database backup and perform point-in-time recovery (PITR)",
    ]
    assert runbook.steps[-1].section == (
        "Troubleshooting / Copying the Git repository results in a bad fsck or non-working "
        "repository"
    )


def test_kubernetes_mixin_alert_runbooks_hand_count():
    # Read through: every list line is a column-0 "+" bullet directly under a "#####"
    # alert (or under the last "##"), there are no other list markers and no prose-only
    # sections (the "###" groups go straight to "#####", so they are empty). The "+"
    # lines were then tallied with `grep -c '^+ '` on the file: 179.
    runbook = parse_shared("kubernetes-mixin-alert-runbooks.md")
    assert runbook.title == "Kubernetes Alert Runbooks"
    assert len(runbook.steps) == 179
    assert titles(runbook)[:3] == [
        "*Message*: `KubeAPI has disappeared from Prometheus target discovery.`",
        "*Severity*: critical",
        "*Runbook*: [Link](https://runbooks.prometheus-operator.dev/runbooks/kubernetes/kubeapidown/)",
    ]
    assert runbook.steps[0].section == 'Group Name: "kubernetes-absent" / Alert Name: "KubeAPIDown"'
    # The license header is an HTML comment: not in the description.
    assert runbook.description.startswith("As Rob Ewaschuk")


def test_crlf_runbook_equals_its_lf_copy_and_its_bom_copy():
    raw = (RUNBOOKS / "aws-skill-irp-ransomware-crlf.md").read_bytes()
    assert raw.count(b"\r\n") == raw.count(b"\n")  # really CRLF throughout

    crlf = parse_runbook(raw, "skill.md")
    lf = parse_runbook(raw.replace(b"\r\n", b"\n"), "skill.md")
    bom = parse_runbook(b"\xef\xbb\xbf" + raw, "skill.md")
    old_mac = parse_runbook(raw.replace(b"\r\n", b"\r"), "skill.md")

    assert crlf == lf == bom == old_mac
    assert not any("\r" in step.body or "\r" in step.title for step in crlf.steps)
    assert crlf.title == "Playbook: Ransomware"
    assert crlf.description.startswith("Incident response playbook for ransomware")


# --- front matter ---------------------------------------------------------------------


def test_front_matter_settings_are_read():
    runbook = parse_md(
        "---\ntitle: Restore the DB\nslug: db-restore\ndescription: When *prod* dies.\n"
        "flow: sequential\nlease_minutes: 30\nmax_attempts: 2\n---\n# Ignored H1\n- a\n- b\n"
    )
    assert runbook.title == "Restore the DB"
    assert runbook.slug == "db-restore"
    assert runbook.description == "When *prod* dies."
    assert (runbook.flow, runbook.lease_minutes, runbook.max_attempts) == ("sequential", 30, 2)
    assert runbook.warnings == []
    assert [step.section for step in runbook.steps] == ["", ""]


def test_front_matter_defaults():
    runbook = parse_md("# Title\n- a\n")
    assert (runbook.flow, runbook.lease_minutes, runbook.max_attempts) == ("phased", None, None)


def test_front_matter_duplicate_key_keeps_the_last_value():
    runbook = parse_md("---\ntitle: First\ntitle: Second\n---\n- a\n")
    assert runbook.title == "Second"


def test_front_matter_unknown_key_is_ignored_with_a_warning():
    runbook = parse_md("---\nweight: 20\ntitle: T\n---\n- a\n")
    assert runbook.warnings == ["unknown front-matter key 'weight' ignored"]


def test_front_matter_that_is_not_yaml_names_its_line():
    message = format_error("---\ntitle: ok\nslug: s\ndescription: a: b\n---\n- a\n")
    assert message == (
        "front matter is not valid YAML (line 4): mapping values are not allowed here"
    )


def test_front_matter_error_line_is_counted_in_the_whole_file():
    assert "(line 3)" in format_error("---\ntitle: ok\n\tbad: tab\n---\n- a\n")
    assert "(line 3)" in format_error("---\ntitle: ok\nflow: [phased\n---\n- a\n")


def test_front_matter_must_be_a_mapping():
    assert "front matter must be a mapping" in format_error("---\n- a\n- b\n---\n- a\n")


@pytest.mark.parametrize("flow", ["random", "1", "[phased]"])
def test_bad_flow_is_refused(flow):
    assert "'flow' must be one of phased, sequential, parallel" in format_error(
        f"---\nflow: {flow}\n---\n- a\n"
    )


@pytest.mark.parametrize("key", ["lease_minutes", "max_attempts"])
@pytest.mark.parametrize("value", ["0", "-5", "true", "1.5", "ten"])
def test_non_positive_lease_and_attempts_are_refused(key, value):
    message = format_error(f"---\n{key}: {value}\n---\n- a\n")
    assert f"front matter '{key}' must be a positive whole number" in message


def test_front_matter_after_a_bom_is_still_front_matter():
    runbook = parse_runbook(b"\xef\xbb\xbf---\r\ntitle: T\r\n---\r\n- a\r\n", "x.md")
    assert runbook.title == "T"
    assert titles(runbook) == ["a"]


# --- title, slug, description ---------------------------------------------------------


def test_title_falls_back_from_front_matter_to_h1_to_file_name():
    assert parse_md("---\ntitle: FM\n---\n# H1\n- a\n").title == "FM"
    assert parse_md("# H1\n- a\n").title == "H1"
    assert parse_md("- a\n", "runbooks/disk-full.md").title == "disk-full"


def test_first_h1_is_never_a_section_even_when_front_matter_gives_the_title():
    runbook = parse_md("---\ntitle: FM\n---\n# H1\n- a\n# Second\n- b\n")
    assert [(step.title, step.section) for step in runbook.steps] == [
        ("a", ""),
        ("b", "Second"),
    ]


def test_slug_falls_back_to_the_file_name_then_runbook():
    assert parse_md("# Disk Full!\n- a\n").slug == "disk-full"
    assert parse_md("# ???\n- a\n", "disk_full.md").slug == "disk_full"
    assert parse_md("# ???\n- a\n", "???.md").slug == "runbook"


def test_lengths_stay_within_the_model_fields():
    long_title = " ".join(["restore"] * 40)  # 319 characters
    runbook = parse_md(f"# {long_title}\n## {'x' * 300}\n### {'y' * 300}\n- a\n")
    assert len(runbook.title) <= 200
    assert len(runbook.slug) <= 100 and runbook.slug.endswith("restore")
    assert len(runbook.steps[0].section) <= 500
    assert any(w.startswith("section name cut to 500") for w in runbook.warnings)
    message = format_error(f"title: T\nsteps: [{{id: {'k' * 101}, title: a}}]\n", "x.yml")
    assert message == "step 1 ('a'): 'id' is longer than 100 characters"


def test_description_is_the_text_before_the_first_section():
    runbook = parse_md("# T\n\nWhy this exists.\n\n> careful\n\n## One\n- a\n")
    assert runbook.description == "Why this exists.\n\n> careful"
    assert runbook.steps[0].section_note == ""


def test_title_heading_is_left_out_of_the_text_around_it():
    runbook = parse_md("Before.\n\n# Title\n\nAfter.\n\n## S\n- a\n\n# Late\nMore.\n")
    assert runbook.title == "Title"
    assert runbook.description.split() == ["Before.", "After."]
    # Only the first H1 is the title; a later one opens a section.
    assert runbook.steps[-1].section == "Late"


def test_late_first_h1_is_the_title_and_opens_no_section():
    runbook = parse_md("## S\n- a\n\n# Title\n\nMore.\n")
    assert runbook.title == "Title"
    assert [(s.title, s.section, s.body) for s in runbook.steps] == [("a", "S", "More.")]


def test_front_matter_description_wins_and_the_text_becomes_a_note():
    runbook = parse_md("---\ndescription: From FM\n---\n# T\nIntro.\n\n- a\n")
    assert runbook.description == "From FM"
    assert runbook.steps[0].section_note == "Intro."


# --- sections and steps ---------------------------------------------------------------


def test_nested_headings_give_parent_child_section_names():
    runbook = parse_md("# T\n## A\n### B\n- b\n#### C\n- c\n## D\n- d\n")
    assert [step.section for step in runbook.steps] == ["A / B", "A / B / C", "D"]


def test_text_before_the_first_item_is_the_section_note():
    runbook = parse_md("# T\n## Prepare\nRead this first.\n\n```sh\nls\n```\n\n- a\n- b\n")
    expected = "Read this first.\n\n```sh\nls\n```"
    assert [step.section_note for step in runbook.steps] == [expected, expected]


def test_text_between_and_after_lists_goes_to_the_step_before():
    runbook = parse_md("## S\n- a\n- b\n\nBetween.\n\n1. c\n\nAfter.\n")
    assert [(s.title, s.body) for s in runbook.steps] == [
        ("a", ""),
        ("b", "Between."),
        ("c", "After."),
    ]


def test_section_with_content_but_no_list_is_one_step():
    runbook = parse_md("# T\n## Rollback\nUndo it.\n\n```sh\nundo\n```\n")
    step = runbook.steps[0]
    assert (step.title, step.section, step.section_note) == ("Rollback", "Rollback", "")
    assert step.body == "Undo it.\n\n```sh\nundo\n```"


def test_empty_sections_are_ignored_and_do_not_break_the_order():
    runbook = parse_md("# T\n## One\n- a\n## Empty\n\n---\n\n<!-- nothing -->\n## Two\n- b\n")
    assert [step.section for step in runbook.steps] == ["One", "Two"]
    assert runbook.steps[1].after == ["1"]


def test_parent_heading_straight_to_a_child_has_no_step():
    runbook = parse_md("# T\n## Parent\n### Child\nText.\n")
    assert [(s.title, s.section) for s in runbook.steps] == [("Child", "Parent / Child")]


def test_later_h1_starts_a_section():
    runbook = parse_md("# Title\n# Warning\nDo not.\n## Part\n- a\n")
    assert [(s.title, s.section) for s in runbook.steps] == [
        ("Warning", "Warning"),
        ("a", "Warning / Part"),
    ]


def test_plain_list_without_headings_imports():
    runbook = parse_md("- one\n- two\n- three\n", "plain.md")
    assert titles(runbook) == ["one", "two", "three"]
    assert runbook.title == "plain"
    assert {step.section for step in runbook.steps} == {""}


def test_items_before_the_first_section_have_no_section():
    runbook = parse_md("# T\n- early\n## S\n- late\n")
    assert [(s.title, s.section) for s in runbook.steps] == [("early", ""), ("late", "S")]
    assert runbook.steps[1].after == ["1"]


def test_fenced_code_is_never_parsed_as_headings_or_steps():
    runbook = parse_md("# T\n## S\n```bash\n# not a heading\n- not a step\n1. nor this\n```\n")
    assert titles(runbook) == ["S"]
    assert "# not a heading" in runbook.steps[0].body


def test_html_comments_are_never_parsed_as_steps():
    runbook = parse_md("# T\n<!--\n## Hidden\n- hidden\n-->\n## S\n- shown\n<!-- - no -->\n")
    assert titles(runbook) == ["shown"]
    assert runbook.steps[0].section == "S"


def test_list_in_a_blockquote_is_body_text_not_steps():
    runbook = parse_md("## S\n> - quoted\n> - quoted too\n\n- real\n")
    assert titles(runbook) == ["real"]
    assert runbook.steps[0].section_note == "> - quoted\n> - quoted too"


def test_item_first_line_is_title_and_the_rest_is_the_dedented_body():
    runbook = parse_md(
        "- Run `kubectl get pods`\n"
        "  and check **all** of them\n"
        "\n"
        "  ```sh\n"
        "  kubectl get pods -A\n"
        "  ```\n"
        "  - nested item\n"
        "    - deeper\n"
    )
    step = runbook.steps[0]
    assert len(runbook.steps) == 1
    assert step.title == "Run `kubectl get pods`"
    assert step.body == (
        "and check **all** of them\n\n```sh\nkubectl get pods -A\n```\n- nested item\n  - deeper"
    )


def test_long_title_is_cut_at_200_characters_with_the_rest_in_the_body():
    words = " ".join(f"word{n:03d}" for n in range(60))  # 479 characters
    runbook = parse_md(f"- {words}\n  second line\n")
    step = runbook.steps[0]
    assert len(step.title) <= 200
    assert words.startswith(step.title)
    assert f"{step.title} {step.body}" == f"{words}\nsecond line"


def test_long_title_without_spaces_is_cut_at_exactly_200():
    word = "x" * 250
    step = parse_md(f"- {word}\n").steps[0]
    assert (step.title, step.body) == ("x" * 200, "x" * 50)


@pytest.mark.parametrize(
    "source",
    ["- a\n- b\n", "* a\n* b\n", "+ a\n+ b\n", "1. a\n2. b\n", "1) a\n2) b\n", "1. a\n1. b\n"],
)
def test_every_list_marker_makes_steps(source):
    assert titles(parse_md(source)) == ["a", "b"]


def test_task_boxes_are_stripped_and_checked_boxes_import_as_ordinary_steps():
    runbook = parse_md("- [ ] open\n- [x] done\n- [X] DONE\n1. [ ] numbered\n- [link](x) kept\n")
    assert titles(runbook) == ["open", "done", "DONE", "numbered", "[link](x) kept"]


def test_empty_list_item_is_skipped_with_a_warning():
    runbook = parse_md("- a\n-\n- b\n")
    assert titles(runbook) == ["a", "b"]
    assert [step.key for step in runbook.steps] == ["1", "2"]
    assert runbook.warnings == ["line 2: empty list item ignored"]


def test_item_with_only_a_checkbox_is_skipped_and_one_without_a_first_line_is_untitled():
    runbook = parse_md("- [ ]\n- [x]\n  details below\n- b\n")
    assert [(s.title, s.body) for s in runbook.steps] == [
        ("Untitled step", "details below"),
        ("b", ""),
    ]
    assert runbook.warnings == [
        "line 1: empty list item ignored",
        "line 2: list item has no title; titled 'Untitled step'",
    ]


def test_item_opening_with_a_quote_keeps_it_in_the_body():
    step = parse_md("- > Careful: prod\n  > only\n").steps[0]
    assert (step.title, step.body) == ("Careful: prod", "> Careful: prod\n> only")


def test_item_opening_with_code_takes_its_title_from_the_code():
    runbook = parse_md("- ```sh\n  systemctl restart app\n  ```\n")
    step = runbook.steps[0]
    assert step.title == "systemctl restart app"
    assert step.body == "```sh\nsystemctl restart app\n```"


def test_reference_definitions_travel_with_the_steps_that_use_them():
    runbook = parse_md("## S\n- See [the docs][docs].\n- Other.\n\n[docs]: https://example.org\n")
    assert runbook.steps[0].body == "[docs]: https://example.org"
    assert runbook.steps[1].body == ""


def test_keys_run_in_document_order():
    runbook = parse_md("- a\n## S\nText.\n## T\n- b\n- c\n")
    assert [(s.key, s.title) for s in runbook.steps] == [
        ("1", "a"),
        ("2", "S"),
        ("3", "b"),
        ("4", "c"),
    ]


# --- flows ----------------------------------------------------------------------------

FLOW_SAMPLE = "## One\n- a\n- b\n## Two\n1. c\n2. d\n3. e\n\n- f\n## Three\nProse.\n"


def test_phased_flow_orders_sections_and_chains_numbered_lists():
    runbook = parse_md(FLOW_SAMPLE)
    assert afters(runbook) == {
        "1": [],
        "2": [],
        "3": ["1", "2"],  # first step of a section waits for the whole previous section
        "4": ["3"],  # numbered list: each item waits for the one before
        "5": ["4"],
        "6": ["1", "2"],  # a bullet is parallel inside its section
        "7": ["3", "4", "5", "6"],
    }


def test_sequential_flow_chains_every_step():
    runbook = parse_md("---\nflow: sequential\n---\n" + FLOW_SAMPLE)
    assert afters(runbook) == {
        "1": [],
        "2": ["1"],
        "3": ["2"],
        "4": ["3"],
        "5": ["4"],
        "6": ["5"],
        "7": ["6"],
    }


def test_parallel_flow_has_no_prerequisites():
    runbook = parse_md("---\nflow: Parallel\n---\n" + FLOW_SAMPLE)
    assert runbook.flow == "parallel"
    assert all(step.after == [] for step in runbook.steps)


# --- errors ---------------------------------------------------------------------------


def test_file_over_one_megabyte_is_refused():
    data = b"- a\n" + b"x" * MAX_BYTES
    assert "too large" in format_error(data)


def test_file_of_exactly_one_megabyte_is_accepted():
    data = b"- a\n" + b" " * (MAX_BYTES - 4)
    assert titles(parse_runbook(data, "big.md")) == ["a"]


def test_file_that_is_not_utf8_is_refused():
    message = format_error("- caf\u00e9\n".encode("latin-1"))
    assert message == "file is not UTF-8 text (invalid byte 0xe9 at byte 5)"


@pytest.mark.parametrize(
    "source",
    ["", "# Only a title\n", "# T\nJust prose.\n", "# T\n## Empty\n### Also empty\n"],
)
def test_no_steps_is_refused(source):
    assert format_error(source).startswith("no steps found")


def test_more_than_2000_steps_is_refused():
    assert "too many steps: 2,001" in format_error("- s\n" * 2001)


def test_exactly_2000_steps_is_accepted():
    assert len(parse_md("- s\n" * 2000).steps) == 2000


def test_yaml_error_names_the_line():
    message = format_error("title: T\nsteps:\n  - title: a\n  - title: [b\n", "r.yml")
    assert message.startswith("YAML runbook is not valid YAML (line 5)")


# --- YAML runbooks --------------------------------------------------------------------

YAML_RUNBOOK = """\
title: Restore the database
description: From the nightly snapshot.
lease_minutes: 20
steps:
  - title: Stop writes
    section: Prepare
  - title: Snapshot
    section: Prepare
    estimate_minutes: 5
  - id: restore
    title: Restore
    body: |
      Run `restore.sh`.
    section: Restore
  - title: Check
    section: Verify
"""


def test_yaml_runbook_follows_the_flow_by_section():
    runbook = parse_runbook(YAML_RUNBOOK.encode(), "restore.yaml")
    assert runbook.title == "Restore the database"
    assert runbook.slug == "restore-the-database"
    assert runbook.description == "From the nightly snapshot."
    assert runbook.lease_minutes == 20
    assert [(s.key, s.title, s.section) for s in runbook.steps] == [
        ("1", "Stop writes", "Prepare"),
        ("2", "Snapshot", "Prepare"),
        ("restore", "Restore", "Restore"),
        ("4", "Check", "Verify"),
    ]
    assert runbook.steps[1].estimate_minutes == 5
    assert runbook.steps[2].body == "Run `restore.sh`."
    assert afters(runbook) == {"1": [], "2": [], "restore": ["1", "2"], "4": ["restore"]}


def test_yaml_sequential_flow():
    runbook = parse_runbook(
        b"title: T\nflow: sequential\nsteps: [{title: a}, {title: b}]\n", "x.yml"
    )
    assert afters(runbook) == {"1": [], "2": ["1"]}


def test_yaml_explicit_after_replaces_the_flow():
    source = (
        "title: T\nsteps:\n"
        "  - {id: a, title: A}\n"
        "  - {id: b, title: B}\n"
        "  - {id: 3, title: C, after: [a, b, a]}\n"
    )
    runbook = parse_runbook(source.encode(), "x.yml")
    assert afters(runbook) == {"a": [], "b": [], "3": ["a", "b"]}


def test_yaml_long_or_multiline_title_moves_the_rest_to_the_body():
    source = 'title: T\nsteps:\n  - title: "First line\\nsecond"\n    body: More.\n'
    step = parse_runbook(source.encode(), "x.yml").steps[0]
    assert (step.title, step.body) == ("First line", "second\n\nMore.")


def test_yaml_unknown_keys_warn():
    runbook = parse_runbook(b"title: T\nowner: me\nsteps: [{title: a, colour: red}]\n", "x.yml")
    assert runbook.warnings == [
        "unknown key 'owner' ignored",
        "step 1 ('a'): unknown key 'colour' ignored",
    ]


def test_yaml_unknown_after_reference_is_refused():
    source = "title: T\nsteps:\n  - {id: a, title: A}\n  - {title: Restore, after: [a, zz]}\n"
    assert format_error(source, "x.yml") == (
        "step 2 ('Restore'): 'after' refers to unknown step id 'zz'"
    )


def test_yaml_cycle_is_refused():
    source = (
        "title: T\nsteps:\n"
        "  - {id: a, title: A, after: [c]}\n"
        "  - {id: b, title: B, after: [a]}\n"
        "  - {id: c, title: C, after: [b]}\n"
    )
    message = format_error(source, "x.yml")
    assert message.startswith("the 'after' prerequisites form a cycle: ")
    assert message.count("→") == 3


def test_yaml_step_waiting_for_itself_is_a_cycle():
    assert "cycle" in format_error("title: T\nsteps: [{id: a, title: A, after: [a]}]\n", "x.yml")


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ("{title: Restore, after: a}", "step 3 ('Restore'): 'after' must be a list of step ids"),
        (
            "{title: Restore, after: [[a]]}",
            "step 3 ('Restore'): 'after' must be a list of step ids",
        ),
        ("{title: [Restore]}", "step 3: 'title' must be text, not a list"),
        ("{body: only}", "step 3: 'title' is required"),
        ("just text", "step 3: must be a mapping with at least a 'title', not a str"),
        (
            "{title: Restore, body: {a: 1}}",
            "step 3 ('Restore'): 'body' must be text, not a mapping",
        ),
        (
            "{title: Restore, section: [x]}",
            "step 3 ('Restore'): 'section' must be text, not a list",
        ),
        ("{title: Restore, id: [x]}", "step 3 ('Restore'): 'id' must be text or a number"),
        ("{title: Restore, id: a}", "step 3 ('Restore'): 'id' 'a' is already used by step 1"),
        (
            "{title: Restore, estimate_minutes: -1}",
            "step 3 ('Restore'): 'estimate_minutes' must be a positive whole number",
        ),
        (
            "{title: Restore, estimate_minutes: 100000000000000000000}",
            "step 3 ('Restore'): 'estimate_minutes' must be at most 525,600",
        ),
    ],
)
def test_yaml_field_of_the_wrong_type_names_the_field_and_the_step(step, expected):
    source = f"title: T\nsteps:\n  - {{id: a, title: A}}\n  - {{title: B}}\n  - {step}\n"
    assert format_error(source, "x.yml").startswith(expected)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("- a\n- b\n", "not a Pullboard runbook: the file holds a list"),
        ("title: T\n", "not a Pullboard runbook: it has no 'steps' list"),
        ("title: T\nsteps: none\n", "not a Pullboard runbook: 'steps' must be a list"),
        ("steps: [{title: a}]\n", "YAML runbook has no 'title'"),
        ("title: T\nsteps: []\n", "no steps found"),
        ("title: T\nflow: waterfall\nsteps: [{title: a}]\n", "'flow' must be one of"),
        ("title: T\nmax_attempts: 0\nsteps: [{title: a}]\n", "'max_attempts' must be a positive"),
        ("title: T\nlease_minutes: 10\nmax_lease_minutes: 5\nsteps: [{title: a}]\n",
         "'max_lease_minutes' (5) must be at least 'lease_minutes' (10)"),
    ],
)
def test_yaml_documents_that_are_not_runbooks_are_refused(source, expected):
    assert format_error(source, "x.yaml").startswith(expected)


def test_yaml_with_more_than_2000_steps_is_refused():
    source = "title: T\nsteps:\n" + "  - {title: s}\n" * 2001
    assert "too many steps" in format_error(source, "x.yml")


def test_file_kind_follows_the_extension():
    assert parse_runbook(b"title: T\nsteps: [{title: a}]\n", "R.YAML").title == "T"
    # Anything not YAML is Markdown: here a one-item list whose title is the YAML text.
    assert titles(parse_runbook(b"- title: a\n", "notes.txt")) == ["title: a"]
    assert titles(parse_runbook(b"- a\n", "notes.markdown")) == ["a"]


# --- robustness -----------------------------------------------------------------------

FRAGMENTS = [
    "# H1",
    "## H2",
    "#### H4",
    "- item",
    "  - nested",
    "1. one",
    "1) two",
    "+ plus",
    "- [ ] task",
    "- [x] done",
    "-",
    "```",
    "~~~",
    "    code",
    "<!--",
    "-->",
    "> quote",
    "> - quoted item",
    "---",
    "text",
    "",
    "[ref]: https://example.org",
    "| a | b |",
    "|---|---|",
    "\t- tabbed",
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=40))
def test_any_markdown_either_imports_or_is_refused_cleanly(lines):
    source = "\n".join(lines)
    try:
        runbook = parse_md(source)
    except RunbookFormatError as exc:
        assert "\n" not in str(exc)
        return
    keys = [step.key for step in runbook.steps]
    assert keys == [str(n) for n in range(1, len(keys) + 1)]
    for step in runbook.steps:
        assert step.title and len(step.title) <= 200
        assert all(key in keys[: keys.index(step.key)] for key in step.after)
