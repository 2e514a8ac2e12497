"""Screenshots of the website's explorer page in both editions, for the README (book/screenshots/).

    python scripts/build_book.py && python scripts/screenshot_explorer.py    # after make book

Serves build/book/html on a local port, opens explorer.html (and zh/explorer.html) in Debian's
headless Chromium with Playwright, picks a disk at 90% masking with the best of 20 masks, and saves 1400x1000 PNGs. The
Chinese page needs a CJK font (Debian: fonts-noto-cjk).
"""

from __future__ import annotations

import functools
import http.server
import sys
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Of 20 masks (the page's "new mask" button), the one whose reconstruction is closest: one where a
# visible patch falls on the disk, as the page's text tells the reader to look for.
BEST_OF_20 = """async () => { const e = window.maeExplorer, button = document.querySelector('#mx-new-mask');
  const mse = () => { const l = e.state.last; let s = 0, n = 0;
    l.errors.forEach((v, i) => { if (l.mask[i]) { s += v; n++; } }); return s / n; };
  await e.idle(); let best = [mse(), e.state.seed];
  for (let i = 0; i < 19; i++) { button.click(); await e.idle(); if (mse() < best[0]) best = [mse(), e.state.seed]; }
  e.state.seed = best[1] - 1; button.click(); await e.idle(); }"""
SHOTS = {"explorer.html": "explorer.png", "zh/explorer.html": "zh_explorer.png"}


def main(site: Path = ROOT / "build" / "book" / "html", out: Path = ROOT / "book" / "screenshots") -> None:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
            for page_path, name in SHOTS.items():
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"http://127.0.0.1:{httpd.server_address[1]}/{page_path}")
                page.wait_for_selector("#mae-explorer[data-ready=true]", timeout=60_000)
                page.evaluate("window.maeExplorer.chooseSample(0)")  # a disk
                page.locator("#mx-ratio").fill("0.9")
                page.evaluate(BEST_OF_20)
                page.locator("#mae-explorer").scroll_into_view_if_needed()
                page.evaluate("window.scrollBy(0, -120)")
                page.screenshot(path=str(out / name))
                print(f"{out / name}: {page.locator('#mx-summary').text_content()}")
                page.close()
            browser.close()
    finally:
        httpd.shutdown()


if __name__ == "__main__":
    main(*(Path(a) for a in sys.argv[1:]))
