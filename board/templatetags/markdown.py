"""`{{ text|markdown }}`: runbook Markdown rendered for the page, never as live HTML.

Runbooks are imported from files anyone on a team may have written, so raw HTML in them is
escaped (markdown-it's `html` option off) and markdown-it's default link validation refuses
`javascript:`, `vbscript:`, `file:` and most `data:` URLs. Only the renderer's own tags reach
the page, which is why the output may be marked safe.
"""

from django import template
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

register = template.Library()

# One shared parser: render() keeps its state per call, so it is safe across threads.
_RENDERER = MarkdownIt("commonmark", {"html": False}).enable("table")


def render_markdown(text: str) -> SafeString:
    if not text:
        return mark_safe("")
    return mark_safe(_RENDERER.render(str(text)))  # noqa: S308 - html is disabled above


register.filter("markdown", render_markdown)
