#!/usr/bin/env python3
"""Render the HTML memory report of MCUNet-VWW on the STM32F746 and screenshot it
with headless Chromium into docs/report_mcunet_vww1.png (the page itself is not
kept: it is derived from a shared model).

    python scripts/report_screenshot.py [--shared ../shared/models]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "models")
    args = ap.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("chromium is not installed (Debian: apt-get install --no-install-recommends chromium)")
    docs = REPO / "docs"
    with tempfile.TemporaryDirectory() as profile:
        page = Path(profile) / "report_mcunet_vww1.html"
        subprocess.run([sys.executable, "-m", "tinyc.cli", "report", str(args.shared / "mcunet" / "mcunet_vww1.onnx"),
                        "--board", "stm32f746", "--format", "html", "-o", str(page)], check=True, cwd=REPO)
        subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-dev-shm-usage", f"--user-data-dir={profile}/chrome", "--hide-scrollbars",
                        f"--screenshot={docs / 'report_mcunet_vww1.png'}", "--window-size=1280,2400",
                        page.resolve().as_uri()], check=True, capture_output=True)
    print(f"wrote {docs / 'report_mcunet_vww1.png'}")


if __name__ == "__main__":
    main()
