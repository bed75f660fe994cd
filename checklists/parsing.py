"""Runbook import: turn a Markdown or YAML file into a :class:`ParsedRunbook`.

Pure Python, no database: the importer service stores what this returns.

Markdown is read with markdown-it-py (CommonMark + GFM tables + front matter) and the
structure comes from its syntax tree, never from regular expressions over the text, so
fenced code (`# comment` lines in a bash block), indented code and HTML comments can never
turn into headings or steps. Bodies, notes and the description are slices of the original
source cut along the tree's line ranges (``map``), so the Markdown is kept as written.

Decisions the import rules leave open (callers and tests rely on them):

* **Top-level list** means a list directly in the document flow (a child of the document
  root). A list inside a blockquote (``> - item``), an HTML block or a list item is body
  text, never a step. MkDocs admonitions (``!!! warning`` plus an indented body) are plain
  paragraphs/indented code to CommonMark, so lists in them are never steps either.
* The first H1 is the title heading wherever it stands; it never opens or closes a section
  (text after it stays where it was). Later H1s open sections like any other heading.
* Text after the last list of a section belongs to the body of the step before it, like
  text between two lists.
* Thematic breaks (``---``) and HTML blocks that hold only comments are not content: a
  section holding nothing else is empty, and they are left out of notes and bodies when
  they stand at the edges.
* When front matter gives the description, the text before the first section becomes the
  note of the steps before the first section; with no such step it is dropped (with a
  warning) because front matter wins.
* A list item whose first line is empty after its marker and checkbox but which has more
  lines is titled "Untitled step"; an item holding nothing (or only a checkbox) is
  skipped. Both with a warning naming the line.
* Phased flow: sections are grouped by heading occurrence, not by name (two headings with
  the same text are two phases). A step with no predecessor inside its section waits for
  every step of the previous non-empty section. YAML steps form one phase per run of
  consecutive steps with the same ``section``.
* Link reference definitions (``[label]: url``) are document-wide in Markdown, so the
  definitions a step's title or body (or a note, or the description) uses are appended to
  that text; each is rendered on its own later.
* A list item that opens with code or a quote instead of a line of text takes its title
  from its first line of text (or code); its whole content is the body.
* A ``---`` first line that is never closed is not front matter: the file is plain
  Markdown (CommonMark reads it as a thematic break).
* Lengths stay within the model fields: slug at most 100 characters (cut at a hyphen),
  section names at most 500 (cut, with a warning), YAML ids at most 100 (else an error),
  the runbook title one line of at most 200 (cut like a step title, with a warning).
* YAML: when any step has ``after``, those lists are the prerequisites and ``flow`` is
  kept as declared but not applied.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import yaml
from django.utils.text import slugify
from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode
from mdit_py_plugins.front_matter import front_matter_plugin

MAX_BYTES = 1_048_576
MAX_STEPS = 2_000
# Field sizes of checklists.models (Runbook.slug, Step.key, Step.section): the parser keeps
# within them so that storing never fails on a length.
MAX_TITLE_CHARS = 200
MAX_SLUG_CHARS = 100
MAX_KEY_CHARS = 100
MAX_SECTION_CHARS = 500
FLOWS = ("phased", "sequential", "parallel")
YAML_SUFFIXES = (".yml", ".yaml")
UNTITLED_STEP = "Untitled step"
UNTITLED_SECTION = "Untitled section"

# Keys shared by Markdown front matter and the top level of a YAML runbook.
SETTING_KEYS = (
    "title", "slug", "description", "flow", "lease_minutes", "max_attempts",
    "max_lease_minutes", "wip_limit",
)
YAML_STEP_KEYS = ("id", "title", "body", "section", "after", "estimate_minutes")
LIST_TYPES = ("bullet_list", "ordered_list")
CHECKBOXES = ("[ ]", "[x]", "[X]")

# Only the block structure matters: titles and bodies are source text, so inline parsing is
# switched off. That also keeps 1 MB of pathological inline input ("[[[[…", "**_**_…") from
# taking tens of seconds.
_MARKDOWN = MarkdownIt("commonmark").use(front_matter_plugin).enable("table").disable("inline")


class RunbookFormatError(ValueError):
    """The file is not an importable runbook; the message is one line for the user."""


@dataclass
class ParsedStep:
    key: str
    title: str
    body: str
    section: str
    section_note: str
    after: list[str]
    estimate_minutes: int | None = None


@dataclass
class ParsedRunbook:
    title: str
    slug: str
    description: str
    flow: str
    lease_minutes: int | None
    max_attempts: int | None
    steps: list[ParsedStep]
    warnings: list[str]
    max_lease_minutes: int | None = None  # longest a claim may be extended to (default 4 leases)
    wip_limit: int | None = None  # live claims one person may hold in this runbook's runs


def parse_runbook(data: bytes, filename: str) -> ParsedRunbook:
    """Parse an uploaded runbook; YAML for ``.yml``/``.yaml``, Markdown for anything else.

    Raises :class:`RunbookFormatError` with one readable line when the file cannot be
    imported.
    """
    text = _decode(data)
    if PurePath(filename).suffix.lower() in YAML_SUFFIXES:
        return _parse_yaml_runbook(text, filename)
    return _parse_markdown_runbook(text, filename)


# --- shared helpers -------------------------------------------------------------------


def _decode(data: bytes) -> str:
    """Check size and encoding; strip a BOM and normalise line endings to LF."""
    if len(data) > MAX_BYTES:
        raise RunbookFormatError(
            f"file is too large: {len(data):,} bytes (the limit is {MAX_BYTES:,} bytes, 1 MB)"
        )
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        position = bom + exc.start  # counted in the file as uploaded, BOM included
        raise RunbookFormatError(
            f"file is not UTF-8 text (invalid byte 0x{data[position]:02x} at byte {position:,})"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _yaml_error(exc: Exception, what: str, first_line: int) -> RunbookFormatError:
    """Turn a PyYAML error into one line naming the 1-based line in the whole file.

    ``first_line`` is the file line (1-based) where the YAML text starts.
    """
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc)
    where = f" (line {mark.line + first_line})" if mark is not None else ""
    return RunbookFormatError(_one_line(f"{what} is not valid YAML{where}: {problem}"))


def _load_yaml(text: str, what: str, first_line: int) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, what, first_line) from None
    except RecursionError:
        # PyYAML composes recursively: a pathologically nested file must not crash us.
        raise RunbookFormatError(f"{what} is nested too deeply to be a runbook") from None


def _is_text_scalar(value: object) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def _text_field(value: object, name: str, where: str) -> str:
    if not _is_text_scalar(value):
        raise RunbookFormatError(f"{where}'{name}' must be text, not {_type_name(value)}")
    return str(value).strip()


# Upper bounds keep every later date computation in range (a lease of a billion minutes
# would overflow the lease expiry) and catch typos.
SETTING_MAXIMUMS = {
    "lease_minutes": 7 * 24 * 60,
    "max_lease_minutes": 30 * 24 * 60,
    "max_attempts": 100,
    "wip_limit": 100,
    # A year of work: any step estimate beyond it is a typo, and it keeps the value inside the
    # databases' 32-bit integer column.
    "estimate_minutes": 365 * 24 * 60,
}


def _positive_int_field(value: object, name: str, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise RunbookFormatError(f"{where}'{name}' must be a positive whole number (got {value!r})")
    maximum = SETTING_MAXIMUMS.get(name)
    if maximum is not None and value > maximum:
        raise RunbookFormatError(f"{where}'{name}' must be at most {maximum:,} (got {value:,})")
    return value


def _type_name(value: object) -> str:
    names = {dict: "a mapping", list: "a list", bool: "true/false", type(None): "empty"}
    return names.get(type(value), f"a {type(value).__name__}")


@dataclass
class _Settings:
    """Runbook-level values from front matter or the top of a YAML runbook."""

    title: str | None = None
    slug: str | None = None
    description: str | None = None
    flow: str = "phased"
    lease_minutes: int | None = None
    max_attempts: int | None = None
    max_lease_minutes: int | None = None
    wip_limit: int | None = None


def _read_settings(
    values: Mapping[Any, Any], where: str, extra_keys: Iterable[str], warnings: list[str]
) -> _Settings:
    """Validate the runbook-level keys; unknown keys are ignored with a warning.

    ``where`` prefixes error messages ("front matter " or ""); ``extra_keys`` are keys the
    caller handles itself (``steps`` in a YAML runbook).
    """
    known = set(SETTING_KEYS) | set(extra_keys)
    for key in values:
        if key not in known:
            noun = "front-matter key" if where else "key"
            warnings.append(f"unknown {noun} '{key}' ignored")
    settings = _Settings()
    if values.get("title") is not None:
        settings.title = _text_field(values["title"], "title", where) or None
    if values.get("slug") is not None:
        settings.slug = _text_field(values["slug"], "slug", where) or None
    if values.get("description") is not None:
        settings.description = _text_field(values["description"], "description", where)
    if values.get("flow") is not None:
        flow = values["flow"]
        if not isinstance(flow, str) or flow.strip().lower() not in FLOWS:
            raise RunbookFormatError(
                f"{where}'flow' must be one of {', '.join(FLOWS)} (got {flow!r})"
            )
        settings.flow = flow.strip().lower()
    settings.lease_minutes = _positive_int_field(
        values.get("lease_minutes"), "lease_minutes", where
    )
    settings.max_attempts = _positive_int_field(values.get("max_attempts"), "max_attempts", where)
    settings.max_lease_minutes = _positive_int_field(
        values.get("max_lease_minutes"), "max_lease_minutes", where
    )
    settings.wip_limit = _positive_int_field(values.get("wip_limit"), "wip_limit", where)
    if settings.max_lease_minutes and settings.lease_minutes and \
            settings.max_lease_minutes < settings.lease_minutes:
        # The cap is how long "Still on it" may stretch a claim: below one lease it would
        # refuse to extend a claim to a time before the one it already has.
        raise RunbookFormatError(
            f"{where}'max_lease_minutes' ({settings.max_lease_minutes:,}) must be at least "
            f"'lease_minutes' ({settings.lease_minutes:,})"
        )
    return settings


def _make_slug(settings: _Settings, title: str, filename: str, warnings: list[str]) -> str:
    """A non-empty slug of at most 100 characters: the given one (slugified), else from the
    title, else from the file name, else "runbook"."""
    if settings.slug is not None:
        slug = _short_slug(settings.slug)
        if slug:
            return slug
        warnings.append(f"slug {settings.slug!r} has no letters or digits; made one instead")
    return _short_slug(title) or _short_slug(PurePath(filename).stem) or "runbook"


def _short_slug(text: str) -> str:
    # Cut at the last hyphen that fits, so the slug ends on a whole word.
    slug = slugify(text)
    if len(slug) > MAX_SLUG_CHARS:
        cut = slug.rfind("-", 0, MAX_SLUG_CHARS + 1)
        slug = slug[: cut if cut > 0 else MAX_SLUG_CHARS].strip("-_")
    return slug


def _section_name(name: str, warnings: list[str]) -> str:
    if len(name) <= MAX_SECTION_CHARS:
        return name
    warnings.append(f"section name cut to {MAX_SECTION_CHARS} characters: '{name[:40]}...'")
    return name[:MAX_SECTION_CHARS].rstrip()


def _split_title(text: str) -> tuple[str, str]:
    """Split a title into (first line at most 200 characters, rest for the body).

    A long line is cut at the last space in its final quarter when there is one, so a word
    is not split; the rest of the line starts the body.
    """
    first, _, more = text.strip().partition("\n")
    first = first.strip()
    rest = ""
    if len(first) > MAX_TITLE_CHARS:
        cut = first.rfind(" ", MAX_TITLE_CHARS * 3 // 4, MAX_TITLE_CHARS + 1)
        cut = cut if cut > 0 else MAX_TITLE_CHARS
        first, rest = first[:cut].rstrip(), first[cut:].lstrip()
    return first, "\n".join(part for part in (rest, more) if part)


def _runbook_title(title: str, warnings: list[str]) -> str:
    """The runbook title, one line of at most 200 characters like a step title."""
    short, rest = _split_title(title)
    if rest:
        warnings.append(f"title shortened to its first {len(short)} characters on one line")
    return short


def _check_step_count(count: int) -> None:
    if count == 0:
        raise RunbookFormatError(
            "no steps found: a runbook needs list items or sections with content"
        )
    if count > MAX_STEPS:
        raise RunbookFormatError(f"too many steps: {count:,} (the limit is {MAX_STEPS:,})")


def _step_label(position: int, title: str | None) -> str:
    if not title:
        return f"step {position}"
    short = title if len(title) <= 60 else title[:57] + "..."
    return f"step {position} ('{short}')"


def _check_prerequisites(steps: list[ParsedStep]) -> None:
    """Every ``after`` key must name a step, and ``after`` must not form a cycle."""
    position = {step.key: index for index, step in enumerate(steps, start=1)}
    for index, step in enumerate(steps, start=1):
        for key in step.after:
            if key not in position:
                raise RunbookFormatError(
                    f"{_step_label(index, step.title)}: 'after' refers to unknown step id '{key}'"
                )
    cycle = _find_cycle({step.key: step.after for step in steps})
    if cycle:
        path = " → ".join(f"'{key}'" for key in cycle)
        raise RunbookFormatError(f"the 'after' prerequisites form a cycle: {path}")


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """Return one cycle as a closed path of keys (a → b → a), or None.

    Iterative depth-first search, so 2,000 chained steps cannot hit the recursion limit.
    """
    done: set[str] = set()
    for start in graph:
        if start in done:
            continue
        path: list[str] = [start]
        on_path = {start}
        pending = [iter(graph[start])]
        while pending:
            nxt = next(pending[-1], None)
            if nxt is None:
                pending.pop()
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
            elif nxt in on_path:
                return path[path.index(nxt) :] + [nxt]
            elif nxt not in done:
                path.append(nxt)
                on_path.add(nxt)
                pending.append(iter(graph[nxt]))
    return None


@dataclass
class _Draft:
    """A step before keys and prerequisites are known."""

    title: str
    body: str
    section: str
    section_note: str
    phase: int  # index of the section occurrence, for the phased flow
    chained: bool = False  # waits for the previous step (numbered list in phased flow)
    estimate_minutes: int | None = None
    key: str | None = None
    after: list[str] | None = None  # explicit prerequisites (YAML only)


def _apply_flow(drafts: list[_Draft], flow: str) -> list[ParsedStep]:
    """Give each step its key and its prerequisites under the flow rules."""
    keys = [draft.key or str(index) for index, draft in enumerate(drafts, start=1)]
    afters: list[list[str]] = [[] for _ in drafts]
    if flow == "sequential":
        for index in range(1, len(drafts)):
            afters[index] = [keys[index - 1]]
    elif flow == "phased":
        previous_phase: list[str] = []
        current_phase: list[str] = []
        for index, draft in enumerate(drafts):
            if index and draft.phase != drafts[index - 1].phase:
                previous_phase, current_phase = current_phase, []
            if draft.chained and current_phase:
                afters[index] = [keys[index - 1]]
            else:
                # Later steps of a numbered list wait transitively through the first one.
                afters[index] = list(previous_phase)
            current_phase.append(keys[index])
    return [
        ParsedStep(
            key=keys[index],
            title=draft.title,
            body=draft.body,
            section=draft.section,
            section_note=draft.section_note,
            after=afters[index],
            estimate_minutes=draft.estimate_minutes,
        )
        for index, draft in enumerate(drafts)
    ]


# --- Markdown -------------------------------------------------------------------------


@dataclass
class _Section:
    """The nodes under one heading (or before the first section, when heading is None)."""

    name: str
    heading: str | None
    nodes: list[SyntaxTreeNode] = field(default_factory=list)


class _Source:
    """The normalised source lines plus the document-wide link reference definitions."""

    def __init__(self, text: str, references: Mapping[str, Any]) -> None:
        self.lines = text.split("\n")
        self.references = [
            (label.casefold(), "\n".join(self.lines[ref["map"][0] : ref["map"][1]]).strip())
            for label, ref in references.items()
            if ref.get("map")
        ]

    def blank(self, lines: tuple[int, int]) -> None:
        for number in range(*lines):
            self.lines[number] = ""

    def slice(self, start: int, end: int) -> str:
        return _trim_blank_lines(self.lines[start:end])

    def nodes_text(self, nodes: list[SyntaxTreeNode]) -> str:
        """The source from the first to the last of ``nodes``, as written."""
        if not nodes:
            return ""
        return self.slice(_map(nodes[0])[0], _map(nodes[-1])[1])

    def with_references(self, text: str, title: str = "") -> str:
        """Append the reference definitions that ``title`` or ``text`` use to ``text``.

        A definition alone renders as nothing, so appending is harmless; a title's
        references go to its body so that they travel with the step.
        """
        if not self.references:
            return text
        folded = f"{title}\n{text}".casefold()
        used = [
            definition
            for label, definition in self.references
            if f"[{label}]" in folded and definition not in text
        ]
        return "\n\n".join(part for part in (text, "\n".join(used)) if part)


def _map(node: SyntaxTreeNode) -> tuple[int, int]:
    assert node.map is not None  # every block node carries its line range
    return node.map


def _trim_blank_lines(lines: list[str]) -> str:
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return "\n".join(lines[start:end])


def _inline_text(node: SyntaxTreeNode) -> str:
    """The Markdown source of a heading's or paragraph's inline content."""
    return node.children[0].content if node.children else ""


def _is_content(node: SyntaxTreeNode) -> bool:
    """Whether a block counts as content (rules and lone HTML comments do not)."""
    if node.type == "hr":
        return False
    if node.type == "html_block":
        html = node.content.strip()
        return not (html.startswith("<!--") and html.endswith("-->"))
    return True


def _parse_markdown_runbook(text: str, filename: str) -> ParsedRunbook:
    warnings: list[str] = []
    env: dict[str, Any] = {}
    root = SyntaxTreeNode(_MARKDOWN.parse(text, env))
    nodes = list(root.children)
    values: Mapping[Any, Any] = {}
    if nodes and nodes[0].type == "front_matter":
        values = _front_matter_values(nodes.pop(0))
    settings = _read_settings(values, "front matter ", (), warnings)
    source = _Source(text, env.get("references", {}))

    h1_title, sections = _split_sections(nodes, source, warnings)
    description, drafts = _sections_to_drafts(sections, source, settings, warnings)
    _check_step_count(len(drafts))
    title = settings.title or h1_title or PurePath(filename).stem or "Runbook"
    title = _runbook_title(title, warnings)
    steps = _apply_flow(drafts, settings.flow)
    _check_prerequisites(steps)
    return ParsedRunbook(
        title=title,
        slug=_make_slug(settings, title, filename, warnings),
        description=description,
        flow=settings.flow,
        lease_minutes=settings.lease_minutes,
        max_attempts=settings.max_attempts,
        steps=steps,
        warnings=warnings,
        max_lease_minutes=settings.max_lease_minutes,
        wip_limit=settings.wip_limit,
    )


def _front_matter_values(node: SyntaxTreeNode) -> Mapping[Any, Any]:
    # The YAML text starts on the line after the opening `---`: line 2 of the file.
    values = _load_yaml(node.content, "front matter", first_line=2)
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise RunbookFormatError(
            f"front matter must be a mapping of keys to values, not {_type_name(values)}"
        )
    return values


def _split_sections(
    nodes: list[SyntaxTreeNode], source: _Source, warnings: list[str]
) -> tuple[str | None, list[_Section]]:
    """Split the top-level blocks by heading; return (first H1 text, sections).

    The first section (heading None) holds what comes before any section heading.
    Section names join the open headings by level: "Parent / Child".
    """
    h1_title: str | None = None
    open_headings: list[tuple[int, str]] = []
    sections = [_Section(name="", heading=None)]
    for node in nodes:
        if node.type != "heading":
            sections[-1].nodes.append(node)
            continue
        level = int(node.tag[1:])
        heading = _inline_text(node).strip()
        if level == 1 and h1_title is None:
            h1_title = heading or None
            # Text is sliced from the source by line ranges: the title heading must not
            # show up in a description or body that spans it.
            source.blank(_map(node))
            continue
        while open_headings and open_headings[-1][0] >= level:
            open_headings.pop()
        open_headings.append((level, heading or UNTITLED_SECTION))
        name = _section_name(" / ".join(text for _, text in open_headings), warnings)
        sections.append(_Section(name=name, heading=heading or UNTITLED_SECTION))
    return h1_title, sections


def _sections_to_drafts(
    sections: list[_Section], source: _Source, settings: _Settings, warnings: list[str]
) -> tuple[str, list[_Draft]]:
    """Collect the steps of every section; return (description, drafts)."""
    description = settings.description
    drafts: list[_Draft] = []
    for phase, section in enumerate(sections):
        content = [node for node in section.nodes if _is_content(node)]
        if not content:
            continue  # an empty section (or a parent heading straight to a child): ignored
        lead, steps = _section_steps(section, content, phase, source, warnings)
        if section.heading is None:
            # Before the first section: the lead text is the description unless front
            # matter gave one, in which case it is the note of the steps there.
            if description is None:
                description = source.with_references(lead)
                lead = ""
            elif lead and not steps:
                warnings.append(
                    "text before the first section ignored: front matter gives the description"
                )
        elif not steps:
            # A section with content but no list: one step titled by its heading.
            title, rest = _split_title(section.heading)
            body = "\n\n".join(part for part in (rest, lead) if part)
            body = source.with_references(body, title)
            steps = [_Draft(title, body, section.name, "", phase)]
            lead = ""
        note = source.with_references(lead)
        for draft in steps:
            draft.section_note = note
        drafts.extend(steps)
    return description or "", drafts


def _section_steps(
    section: _Section,
    content: list[SyntaxTreeNode],
    phase: int,
    source: _Source,
    warnings: list[str],
) -> tuple[str, list[_Draft]]:
    """Return (text before the first list item, the section's list-item steps).

    Text between two lists, or after the last one, goes to the body of the step before it.
    """
    lead: list[SyntaxTreeNode] = []
    steps: list[_Draft] = []
    trailing: list[SyntaxTreeNode] = []

    def flush_trailing() -> None:
        if trailing and steps:
            extra = source.nodes_text(trailing)
            steps[-1].body = "\n\n".join(part for part in (steps[-1].body, extra) if part)
        trailing.clear()

    for node in content:
        if node.type in LIST_TYPES:
            flush_trailing()
            chained = False
            for item in node.children:
                draft = _item_draft(item, source, warnings)
                if draft is None:
                    continue
                draft.section, draft.phase = section.name, phase
                # Items of one numbered list run in order; the first item does not wait.
                draft.chained = chained and node.type == "ordered_list"
                chained = True
                steps.append(draft)
        elif steps:
            trailing.append(node)
        else:
            lead.append(node)
    flush_trailing()
    for draft in steps:
        draft.body = source.with_references(draft.body, draft.title)
    return source.nodes_text(lead), steps


def _item_draft(item: SyntaxTreeNode, source: _Source, warnings: list[str]) -> _Draft | None:
    """One top-level list item as a step: first line is the title, the rest the body."""
    start, end = _map(item)
    line_number = start + 1
    column = _content_column(source.lines[start], item)
    first = item.children[0] if item.children else None
    if first is None:
        warnings.append(f"line {line_number}: empty list item ignored")
        return None
    if first.type in ("paragraph", "heading"):
        # The title is the first line of the inline content (Markdown source, indentation
        # and marker removed); the checkbox of a task item is dropped.
        inline = _strip_checkbox(_inline_text(first))
        head, _, paragraph_rest = inline.partition("\n")
        title, cut_rest = _split_title(head)
        below = _dedent(
            [_strip_columns(line, column) for line in source.lines[_map(first)[1] : end]]
        )
        body = _trim_blank_lines([cut_rest, paragraph_rest, *below])
    else:
        # A list item that opens with code, a quote or a nested list: title from its first
        # line of text, and the whole content stays in the body.
        first_line = source.lines[start].expandtabs(4)[column:]
        rest = [_strip_columns(line, column) for line in source.lines[start + 1 : end]]
        body = _trim_blank_lines([first_line, *rest])
        title, _ = _split_title(_first_text_line(item))
    if not title:
        if not body:
            warnings.append(f"line {line_number}: empty list item ignored")
            return None
        warnings.append(f"line {line_number}: list item has no title; titled '{UNTITLED_STEP}'")
        title = UNTITLED_STEP
    return _Draft(title=title, body=body, section="", section_note="", phase=0)


def _strip_checkbox(text: str) -> str:
    """Drop a leading task checkbox (``[ ]``, ``[x]``, ``[X]``); checked boxes too."""
    for box in CHECKBOXES:
        if text.startswith(box) and (len(text) == len(box) or text[len(box)].isspace()):
            return text[len(box) :].lstrip(" \t")
    return text


def _first_text_line(node: SyntaxTreeNode) -> str:
    """The first non-blank line of text inside ``node`` (inline text, else code)."""
    for child in node.walk():
        if child.type in ("inline", "fence", "code_block", "html_block"):
            for line in child.content.split("\n"):
                if line.strip():
                    return line.strip()
    return ""


def _content_column(line: str, item: SyntaxTreeNode) -> int:
    """The column where a list item's content starts (CommonMark list-item rules).

    The marker is known from the token (``info`` holds the number of an ordered item,
    ``markup`` its ``.``/``)`` or the bullet); 1-4 spaces after it belong to the marker,
    5 or more mean the content is indented code and only one space counts.
    """
    expanded = line.expandtabs(4)
    indent = len(expanded) - len(expanded.lstrip(" "))
    after_marker = indent + len(item.info) + len(item.markup)
    rest = expanded[after_marker:]
    spaces = len(rest) - len(rest.lstrip(" "))
    if not rest.strip() or spaces > 4:
        return after_marker + 1
    return after_marker + spaces


def _dedent(lines: list[str]) -> list[str]:
    """Remove an indentation of 1-3 spaces shared by every non-blank line.

    Blocks nested a little deeper than the item's content column (``1. step`` with its
    code fence indented 4) come out flush left. Four or more shared spaces are left alone:
    there they mean indented code.
    """
    indents = [len(line) - len(line.lstrip(" ")) for line in lines if line.strip()]
    shared = min(indents, default=0)
    if not 0 < shared < 4:
        return lines
    return [line[shared:] for line in lines]


def _strip_columns(line: str, width: int) -> str:
    """Remove up to ``width`` columns of leading whitespace (tabs stop every 4 columns).

    Lines indented less (lazy continuation lines) lose only what they have.
    """
    column = 0
    for index, char in enumerate(line):
        if column >= width:
            return line[index:]
        if char == " ":
            column += 1
        elif char == "\t":
            tab_stop = (column // 4 + 1) * 4
            if tab_stop > width:
                return " " * (tab_stop - width) + line[index + 1 :]
            column = tab_stop
        else:
            return line[index:]
    return ""


# --- YAML -----------------------------------------------------------------------------


def _parse_yaml_runbook(text: str, filename: str) -> ParsedRunbook:
    warnings: list[str] = []
    document = _load_yaml(text, "YAML runbook", first_line=1)
    if not isinstance(document, dict) or not isinstance(document.get("steps"), list):
        raise RunbookFormatError(_not_a_runbook(document))
    settings = _read_settings(document, "", ("steps",), warnings)
    if settings.title is None:
        raise RunbookFormatError("YAML runbook has no 'title' (it is required)")
    settings.title = _runbook_title(settings.title, warnings)
    raw_steps: list[Any] = document["steps"]
    _check_step_count(len(raw_steps))
    drafts = _yaml_drafts(raw_steps, warnings)
    explicit = any(isinstance(raw, dict) and "after" in raw for raw in raw_steps)
    if explicit:
        steps = _apply_flow(drafts, "parallel")
        for step, draft in zip(steps, drafts, strict=True):
            step.after = draft.after or []
    else:
        steps = _apply_flow(drafts, settings.flow)
    _check_prerequisites(steps)
    return ParsedRunbook(
        title=settings.title,
        slug=_make_slug(settings, settings.title, filename, warnings),
        description=settings.description or "",
        flow=settings.flow,
        lease_minutes=settings.lease_minutes,
        max_attempts=settings.max_attempts,
        steps=steps,
        warnings=warnings,
        max_lease_minutes=settings.max_lease_minutes,
        wip_limit=settings.wip_limit,
    )


def _not_a_runbook(document: object) -> str:
    intro = "not a Pullboard runbook"
    need = "a YAML runbook is a mapping with 'title' and a 'steps' list"
    if not isinstance(document, dict):
        return f"{intro}: the file holds {_type_name(document)}; {need}"
    if "steps" in document:
        return f"{intro}: 'steps' must be a list of steps, not {_type_name(document['steps'])}"
    if "tasks" in document:
        return (
            f"{intro}: it has 'tasks' but no 'steps' "
            f"(it looks like a Cortex XSOAR playbook); {need}"
        )
    return f"{intro}: it has no 'steps' list; {need}"


def _yaml_drafts(raw_steps: list[Any], warnings: list[str]) -> list[_Draft]:
    """Validate YAML steps; every error names the field and the step."""
    drafts: list[_Draft] = []
    used_ids: dict[str, int] = {}
    phase = 0
    for position, raw in enumerate(raw_steps, start=1):
        if not isinstance(raw, dict):
            raise RunbookFormatError(
                f"step {position}: must be a mapping with at least a 'title', not {_type_name(raw)}"
            )
        raw_title = raw.get("title")
        if raw_title is None or (_is_text_scalar(raw_title) and not str(raw_title).strip()):
            raise RunbookFormatError(f"step {position}: 'title' is required")
        where = f"step {position}: "
        title, rest = _split_title(_text_field(raw_title, "title", where))
        label = _step_label(position, title)
        where = f"{label}: "
        for key in raw:
            if key not in YAML_STEP_KEYS:
                warnings.append(f"{label}: unknown key '{key}' ignored")
        key = _yaml_id(raw.get("id"), position, where)
        if key in used_ids:
            raise RunbookFormatError(f"{where}'id' '{key}' is already used by step {used_ids[key]}")
        used_ids[key] = position
        body = "" if raw.get("body") is None else _text_field(raw["body"], "body", where)
        section = (
            "" if raw.get("section") is None else _text_field(raw["section"], "section", where)
        )
        section = _section_name(section, warnings)
        if drafts and section != drafts[-1].section:
            phase += 1
        drafts.append(
            _Draft(
                title=title,
                body="\n\n".join(part for part in (rest, body) if part),
                section=section,
                section_note="",
                phase=phase,
                estimate_minutes=_positive_int_field(
                    raw.get("estimate_minutes"), "estimate_minutes", where
                ),
                key=key,
                after=_yaml_after(raw.get("after"), where),
            )
        )
    return drafts


def _yaml_id(value: object, position: int, where: str) -> str:
    if value is None:
        return str(position)
    if not _is_text_scalar(value) or not str(value).strip():
        raise RunbookFormatError(f"{where}'id' must be text or a number (got {value!r})")
    key = str(value).strip()
    if len(key) > MAX_KEY_CHARS:
        raise RunbookFormatError(f"{where}'id' is longer than {MAX_KEY_CHARS} characters")
    return key


def _yaml_after(value: object, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(_is_text_scalar(item) for item in value):
        raise RunbookFormatError(f"{where}'after' must be a list of step ids")
    # dict.fromkeys keeps the order and drops repeats.
    return list(dict.fromkeys(str(item).strip() for item in value))
