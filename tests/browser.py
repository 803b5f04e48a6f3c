"""Headless Chromium for the report tests: measure where a page's elements end, and take screenshots.

Debian's ``chromium`` package (``.ci/run`` installs it with ``fonts-noto-cjk`` for Japanese); the tests that
need it skip with a reason when it is absent. The page is copied with a small script that, after the load
event, writes the measurements into ``document.title``; ``--dump-dom`` prints the DOM once the virtual time
budget has run out, so the images (data URIs) are laid out when the numbers are taken.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
PROBE = """<script>addEventListener("load", () => {
  const out = {height: document.documentElement.scrollHeight, width: document.documentElement.scrollWidth};
  for (const el of document.querySelectorAll("[id]")) {
    const r = el.getBoundingClientRect();
    out["#" + el.id] = {top: r.top + scrollY, bottom: r.bottom + scrollY};
  }
  out.overflowing = [...document.querySelectorAll("img, table")].filter(
    e => e.getBoundingClientRect().right > innerWidth + 1).length;
  document.title = "MEASURED" + JSON.stringify(out);
});</script>"""


def chromium() -> str | None:
    """The Chromium executable, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    exe = chromium()
    assert exe, "chromium not found"
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                              timeout=timeout, check=False)


def measure(page: Path, width: int = 1280, height: int = 1600) -> dict:
    """Layout of ``page`` in a ``width`` × ``height`` window: total ``height``/``width`` (CSS px), each element
    with an id as ``{"#id": {"top", "bottom"}}`` from the page top, and how many images or tables overflow."""
    html = Path(page).read_text(encoding="utf-8").replace("</body>", PROBE + "</body>")
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "page.html"
        probe.write_text(html, encoding="utf-8")
        done = _run([f"--window-size={width},{height}", "--virtual-time-budget=10000", "--dump-dom",
                     probe.as_uri()])
    found = re.search(r"<title>MEASURED(.*?)</title>", done.stdout, re.S)
    assert found, f"chromium printed no measurement (exit {done.returncode}): {done.stderr[-800:]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 1600) -> Path:
    """A PNG of the first ``height`` CSS pixels of ``page`` at ``width``."""
    _run([f"--window-size={width},{height}", "--virtual-time-budget=10000", f"--screenshot={png}",
          Path(page).resolve().as_uri()])
    assert png.exists() and png.stat().st_size > 10_000, f"no screenshot written to {png}"
    return png
