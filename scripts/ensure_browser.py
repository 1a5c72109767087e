"""Make sure headless Chromium is there for the UI browser tests (`make test` runs this before pytest).

Idempotent: does nothing when /usr/bin/chromium exists. Installs the Debian package `chromium` only when it can
(root with apt-get); otherwise says why it skipped, and the browser tests skip with the same reason.
Prints one line either way; exits non-zero only when an install was attempted and failed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", "-q", *args], env=env, capture_output=True, text=True)


def main() -> int:
    if CHROMIUM.exists():
        print(f"ensure_browser: {CHROMIUM} already present, nothing to do")
        return 0
    if shutil.which("apt-get") is None:
        print(f"ensure_browser: skipped, {CHROMIUM} missing and no apt-get here (browser tests will skip)")
        return 0
    if os.geteuid() != 0:
        print(f"ensure_browser: skipped, {CHROMIUM} missing and not root (run: sudo apt-get install -y chromium)")
        return 0
    # Recommends would pull in udev, mesa, printing...; a font is the one a readable screenshot needs.
    for step in (("update",), ("install", "-y", "--no-install-recommends", "chromium", "fonts-liberation")):
        done = _apt(*step)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            print(f"ensure_browser: apt-get {step[0]} failed: {tail[0]}")
            return 1
    print(f"ensure_browser: installed chromium ({CHROMIUM})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
