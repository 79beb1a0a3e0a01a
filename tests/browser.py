"""Loading a page in headless Chromium (Debian's ``chromium``): which images loaded,
and what errors the page and its console reported."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Outside CI a machine without Chromium skips the browser check; in CI (where .ci/run
# installs Debian's chromium) it runs.
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="chromium not installed"
)
# Flags these machines need: no sandbox as root, and no background networking (the
# network is closed, and Chromium would retry its connections forever).
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]

CHECKER = """<script>
window.__errors = [];
window.addEventListener("error", (e) => {
  const t = e.target;
  window.__errors.push(t && t.src ? "failed to load " + t.src : String(e.message));
}, true);
const __err = console.error;
console.error = (...a) => { window.__errors.push(a.join(" ")); __err(...a); };
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const bad = imgs.filter((i) => !(i.complete && i.naturalWidth > 0))
    .map((i) => i.getAttribute("src"));
  const pre = document.createElement("pre");
  pre.id = "convlens-check";
  pre.textContent = JSON.stringify({images: imgs.length, bad: bad, errors: window.__errors});
  document.body.appendChild(pre);
});
</script>"""


def browser_check(page: Path, tmp: Path) -> dict[str, object]:
    """Load ``page`` in headless Chromium with a checker script; return what it saw:
    the number of images, those that did not load, and console/page errors."""
    assert CHROMIUM is not None, "chromium is not installed (apt-get install chromium)"
    probe = page.with_name("_check.html")
    probe.write_text(page.read_text().replace("</head>", CHECKER + "</head>", 1))
    try:
        proc = subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'chrome'}", "--virtual-time-budget=10000",
             "--enable-logging=stderr", "--v=0", "--dump-dom", probe.as_uri()],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        probe.unlink()
    found = re.search(r'<pre id="convlens-check">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"checker did not run; chromium said: {proc.stderr[-2000:]}"
    result: dict[str, object] = json.loads(found.group(1).replace("&quot;", '"'))
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    result["console"] = console
    return result


def screenshot(page: Path, path: Path, tmp: Path) -> None:
    assert CHROMIUM is not None
    subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'chrome-shot'}", "--window-size=1100,3000",
         f"--screenshot={path}", page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
