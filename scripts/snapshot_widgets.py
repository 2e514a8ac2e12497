"""Take the website's widget snapshots: run a lesson in JupyterLab and photograph its widget.

    python scripts/snapshot_widgets.py             # rewrites book/snapshots/06_explorer.png

A static page cannot run a widget, so the site shows what a learner sees in JupyterLab after
running the lesson, with the widget's default settings. Needs Playwright for Python and a
Chromium (``apt-get install chromium``; Playwright's own browser download is not used):
``pip install playwright``. Re-take a snapshot when the widget's look changes.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
# snapshot file -> (the lesson, CSS selector of the output to photograph)
WIDGETS = {"06_explorer.png": ("06_seeing.ipynb", ".jp-OutputArea-output:has(.jupyter-widgets)")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def snapshot(lesson: str, selector: str, out: Path, port: int) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1300, "height": 1100}, device_scale_factor=2)
        page.goto(f"http://127.0.0.1:{port}/lab/tree/{lesson}")
        page.wait_for_selector(".jp-Notebook", timeout=60_000)
        page.wait_for_timeout(3000)  # the kernel starts
        page.click("text=Run")
        page.click("text=Run All Cells")
        page.wait_for_selector(selector, timeout=300_000)
        page.wait_for_timeout(10_000)  # the widget draws its first figure
        output = page.locator(selector).first
        output.scroll_into_view_if_needed()
        output.screenshot(path=str(out))
        browser.close()


def main() -> None:
    try:
        import playwright  # noqa: F401
    except ImportError:
        sys.exit("snapshots need Playwright for Python: pip install playwright (and apt-get install chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        for lesson, _ in WIDGETS.values():
            shutil.copy(ROOT / "solutions" / lesson, tmp)
        port = free_port()
        lab = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter",
                "lab",
                "--no-browser",
                "--allow-root",
                f"--port={port}",
                "--IdentityProvider.token=",
                "--ServerApp.password=",
                f"--ServerApp.root_dir={tmp}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(10)
            for name, (lesson, selector) in WIDGETS.items():
                out = ROOT / "book" / "snapshots" / name
                snapshot(lesson, selector, out, port)
                print(f"wrote {out.relative_to(ROOT)}")
        finally:
            lab.terminate()
            lab.wait(timeout=30)


if __name__ == "__main__":
    main()
