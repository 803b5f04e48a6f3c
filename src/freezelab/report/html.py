"""Render document blocks as one self-contained HTML file (stdlib only).

Images are embedded as base64 ``data:`` URIs, styles are inline, and nothing is loaded from the
network (no CDN, fonts or scripts), so the file opens offline and can be mailed as is.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from freezelab.report import document as doc

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI","Hiragino Sans","Noto Sans CJK JP",sans-serif;
max-width:1180px;margin:2em auto;padding:0 1em;line-height:1.45;color:#1d1d1f}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}
th,td{border:1px solid #ccd;padding:.25em .55em;text-align:left;vertical-align:top}
th{background:#eef1f6}tr:nth-child(even) td{background:#fafbfd}
.tw{overflow-x:auto}code{background:#f2f2f5;padding:0 .2em;border-radius:3px}
pre{background:#f6f6f8;padding:.7em;overflow-x:auto;font-size:.82em;border-left:3px solid #c33}
details{margin:.4em 0;padding:.2em .6em;border:1px solid #dde;border-radius:4px}
summary{cursor:pointer;font-weight:600}
aside{background:#f4f8ff;border:1px solid #b8cdf0;border-radius:6px;padding:.4em 1em;margin:.8em 0}
aside.warn{background:#fff6e0;border-color:#e0a800}aside p{margin:.3em 0}
#first-screen table{font-size:.84em}#first-screen>p:last-child{font-size:.85em;color:#444}
#warnings{font-size:.92em}#warnings li{margin:.15em 0}#warnings ul{margin:.2em 0}
figure{margin:.8em 0}img{max-width:100%;height:auto}nav{font-size:.9em;margin-bottom:1em}
nav a{margin-right:.9em}
"""


def _inline(text: str) -> str:
    """Escape text, then apply the few inline marks the builders use: **bold**, `code`, *emphasis*."""
    s = html.escape(text, quote=False)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
    return re.sub(r"(?<![*\w])\*([^*\n]+)\*(?![*\w])", r"<em>\1</em>", s)


def _slug(text: str, used: set[str]) -> str:
    base = re.sub(r"[^\w]+", "-", text.lower()).strip("-") or "section"
    slug, i = base, 2
    while slug in used:
        slug, i = f"{base}-{i}", i + 1
    used.add(slug)
    return slug


def _image(b: doc.Image, base_dir: Path) -> str:
    path = base_dir / b.path
    if not path.exists():
        return f"<p><em>{html.escape(b.alt)}</em></p>"
    raw = path.read_bytes()
    data = base64.b64encode(raw).decode("ascii")
    size = ""
    if raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 24:  # IHDR: the page keeps the image's place while loading
        size = f' width="{int.from_bytes(raw[16:20], "big")}" height="{int.from_bytes(raw[20:24], "big")}"'
    return f'<figure><img src="data:image/png;base64,{data}"{size} alt="{html.escape(b.alt)}"></figure>'


def _table(t: doc.Table) -> str:
    head = "".join(f"<th>{_inline(h)}</th>" for h in t.header)
    body = "".join("<tr>" + "".join(f"<td>{_inline(doc.cell(c))}</td>" for c in row) + "</tr>" for row in t.rows)
    return f'<div class="tw"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def render_blocks(blocks: list[doc.Block], base_dir: Path, used: set[str], toc: list[tuple[str, str]]) -> str:
    """HTML for a list of blocks; level-2 headings are collected into ``toc``."""
    out = []
    for b in blocks:
        if isinstance(b, doc.Heading):
            slug = _slug(b.text, used)
            if b.level == 2:
                toc.append((slug, b.text))
            out.append(f'<h{b.level} id="{slug}">{_inline(b.text)}</h{b.level}>')
        elif isinstance(b, doc.Para):
            out.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, doc.Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, doc.Table):
            out.append(_table(b))
        elif isinstance(b, doc.Code):
            out.append(f"<pre><code>{html.escape(b.text, quote=False)}</code></pre>")
        elif isinstance(b, doc.Image):
            out.append(_image(b, base_dir))
        elif isinstance(b, doc.Details):
            inner = render_blocks(b.blocks, base_dir, used, toc)
            out.append(f"<details><summary>{_inline(b.summary)}</summary>{inner}</details>")
        elif isinstance(b, doc.Callout):
            inner = render_blocks(b.blocks, base_dir, used, toc)
            out.append(f'<aside class="{html.escape(b.tone)}"><strong>{_inline(b.title)}</strong>{inner}</aside>')
        elif isinstance(b, doc.Section):
            slug = _slug(b.id, used)
            inner = render_blocks(b.blocks, base_dir, used, toc)
            out.append(f'<section id="{slug}">{inner}</section>')
    return "\n".join(out)


def render(blocks: list[doc.Block], base_dir: Path, lang: str = "en") -> str:
    """A complete, self-contained HTML page.

    Args:
        blocks: the document, first block normally the level-1 title.
        base_dir: folder that image paths are relative to (the report folder).
        lang: the ``lang`` attribute of the page.

    Returns:
        The HTML text.
    """
    toc: list[tuple[str, str]] = []
    body = render_blocks(blocks, base_dir, set(), toc)
    title = next((b.text for b in blocks if isinstance(b, doc.Heading) and b.level == 1), "freezelab report")
    nav = "<nav>" + "".join(f'<a href="#{slug}">{_inline(text)}</a>' for slug, text in toc) + "</nav>"
    # the first screen (title, answer, table, overlay) comes first; the contents before the first section
    cut = body.find("<h2 ")
    head, rest = (body[:cut], body[cut:]) if cut >= 0 else (body, "")
    return (f'<!DOCTYPE html>\n<html lang="{lang}">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            f"{head}\n{nav}\n{rest}\n</body>\n</html>\n")
