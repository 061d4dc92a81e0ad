"""Open a report in headless Chromium: the rendered DOM (with a load-time probe) and a screenshot.

Used by the browser test and to draw the README's screenshot. The browser runs with
networking features off and every host name unresolvable, so a report that referenced
anything outside itself would show it as a failed request (the probe lists every resource
the page loaded). Install it with ``apt-get install chromium`` (``make test`` does on Debian).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--enable-logging=stderr",
    "--v=0",
)

#: Appended to a copy of the page: after load, write what the page did into the DOM.
_PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e)));
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const probe = {
    images: imgs.length,
    images_loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    resources: performance.getEntriesByType('resource').map(r => r.name),
    errors: window.__errors,
  };
  const out = document.createElement('pre');
  out.id = '__probe';
  out.textContent = JSON.stringify(probe);
  document.body.appendChild(out);
});
</script>"""


@dataclass
class PageReport:
    """What the browser saw: the DOM after load, the probe's findings and the console lines."""

    dom: str
    images: int
    images_loaded: int
    resources: list[str]
    errors: list[str]
    console: list[str]


def find_browser() -> str | None:
    """Path of a Chromium-family browser, or ``None``."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(browser: str, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        env = {**os.environ, "HOME": profile}
        return subprocess.run(
            [browser, *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )


def open_page(html_path: str | os.PathLike, *, browser: str | None = None, timeout: float = 120) -> PageReport:
    """Load ``html_path`` (a copy with the probe script) headless and return what it rendered."""
    browser = browser or find_browser()
    if browser is None:
        raise FileNotFoundError("no Chromium-family browser found")
    text = Path(html_path).read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        probed = Path(tmp) / "page.html"
        probed.write_text(text.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
        done = _run(browser, ["--virtual-time-budget=5000", "--dump-dom", probed.as_uri()], timeout)
    match = re.search(r'<pre id="__probe">(.*?)</pre>', done.stdout, re.S)
    if match is None:
        raise RuntimeError(f"the page did not finish loading in the browser:\n{done.stderr[-2000:]}")
    import html as _html

    probe = json.loads(_html.unescape(match.group(1)))
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    return PageReport(done.stdout, probe["images"], probe["images_loaded"], probe["resources"], probe["errors"], console)


def screenshot(html_path: str | os.PathLike, png_path: str | os.PathLike, *, width: int = 1200, height: int = 1500,
               browser: str | None = None, timeout: float = 120) -> Path:
    """Save a PNG of the top ``width x height`` pixels of the page."""
    browser = browser or find_browser()
    if browser is None:
        raise FileNotFoundError("no Chromium-family browser found")
    png = Path(png_path).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    done = _run(
        browser,
        [f"--window-size={width},{height}", "--hide-scrollbars", f"--screenshot={png}", Path(html_path).resolve().as_uri()],
        timeout,
    )
    if not png.is_file():
        raise RuntimeError(f"the browser wrote no screenshot:\n{done.stderr[-2000:]}")
    return png


def external_references(html_text: str) -> list[str]:
    """``src``/``href``/``url()`` targets of a page that are neither ``data:`` nor in-page anchors."""
    targets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", html_text) + re.findall(r"url\(([^)]*)\)", html_text)
    return [t for t in targets if not t.startswith(("data:", "#"))]
