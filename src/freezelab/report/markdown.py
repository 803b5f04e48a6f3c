"""Render document blocks as GitHub-flavoured Markdown (collapsible parts use ``<details>``)."""

from __future__ import annotations

import html
import re

from freezelab.report import document as doc

TAG_LIKE = re.compile(r"<(?=[A-Za-z/!?])")


def _text(text: str) -> str:
    """One-line text with tag-like ``<`` escaped, so ``<lambda>`` in an error message stays visible."""
    return TAG_LIKE.sub("&lt;", doc.cell(text))


def _cell(text: str) -> str:
    return _text(text).replace("|", "\\|")


def _summary(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _table(t: doc.Table) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in t.header) + " |",
             "|" + "|".join("---" for _ in t.header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in t.rows]
    return lines


def _code(c: doc.Code) -> list[str]:
    fence = "```"
    while fence in c.text:
        fence += "`"
    return [fence + c.lang, c.text, fence]


def render_blocks(blocks: list[doc.Block]) -> list[str]:
    """Markdown lines for a list of blocks, separated by blank lines."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, doc.Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, doc.Para):
            out.append(b.text)
        elif isinstance(b, doc.Bullets):
            out.append("\n".join(f"- {_text(item)}" for item in b.items))
        elif isinstance(b, doc.Table):
            out.append("\n".join(_table(b)))
        elif isinstance(b, doc.Code):
            out.append("\n".join(_code(b)))
        elif isinstance(b, doc.Image):
            out.append(f"![{b.alt.replace(']', ')')}]({b.path})")
        elif isinstance(b, doc.Details):
            inner = "\n".join(render_blocks(b.blocks))
            out.append(f"<details><summary>{_summary(b.summary)}</summary>\n\n{inner}\n</details>")
        elif isinstance(b, doc.Section):
            out.extend(render_blocks(b.blocks))
            continue
        elif isinstance(b, doc.Callout):
            inner = "\n".join([f"**{b.title}**", "", *render_blocks(b.blocks)])
            out.append("\n".join(f"> {line}".rstrip() for line in inner.splitlines()))
        out.append("")
    return out


def render(blocks: list[doc.Block]) -> str:
    """The full Markdown document."""
    return "\n".join(render_blocks(blocks)).rstrip() + "\n"
