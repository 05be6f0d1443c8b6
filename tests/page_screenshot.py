"""Screenshot of the page with a segmented ddPCR image, for the README.

    python -m tests.page_screenshot --out docs/page.png

Starts Waitress (SEGMENTER from the environment, classical by default), opens the page in Debian's
Chromium, uploads ../shared/data/samples/ddpcr_original/ddPCR_0_0.png with ddPCR_0_1.png as its
fluorescence channel, and saves the window.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from .conftest import SHARED_DATA
from .servers import free_port, waitress
from .test_browser import CHROMIUM, LAUNCH_ARGS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/page.png"))
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--theme", choices=("light", "dark"), default="light")
    args = parser.parse_args(argv)
    folder = SHARED_DATA / "samples" / "ddpcr_original"
    bright, fluo = folder / "ddPCR_0_0.png", folder / "ddPCR_0_1.png"
    if not bright.exists():
        print(f"{bright} is absent: the screenshot needs the team's data", file=sys.stderr)
        return 2
    port = free_port()
    env = {"SEGMENTER": "classical", **os.environ, "RATE_LIMIT": "", "LOG_FORMAT": "text"}
    with tempfile.TemporaryDirectory() as tmp:
        server = waitress(port, Path(tmp) / "server.log", env)
        try:
            server.wait_healthy(180)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
                page = browser.new_page(viewport={"width": args.width, "height": args.height}, color_scheme=args.theme)
                page.goto(f"http://127.0.0.1:{port}/")
                page.select_option("#preset", "packed_monolayer")
                page.set_input_files("#file-input", str(bright))
                page.wait_for_selector("li.job.done", timeout=300_000)
                page.set_input_files("li.job .fl-input", str(fluo))
                page.wait_for_selector("#fl-panel:not([hidden])", timeout=300_000)
                page.wait_for_selector("li.job.done", timeout=300_000)
                page.wait_for_timeout(300)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out))
                print(f"{args.out}: {page.inner_text('#count')} droplets shown")
                browser.close()
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
