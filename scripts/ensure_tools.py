"""Make sure the system tools the tests drive are there (`make test` runs this before pytest): headless Chromium for
the UI browser tests, docker-compose (Debian's, no daemon needed) to validate docker-compose.yaml and to drive podman
in tests/containers (with podman, runc and mmdebstrap), and ccache, which
the engine build uses as compiler launcher (`make engine` runs `ensure_tools.py ccache` first, so the first compile
fills its store). Names given on the command line limit it to those tools.

Idempotent: does nothing for a tool already present. Installs the Debian packages only when it can (root with
apt-get); otherwise says why it skipped, and the tests that need the tool skip with the same reason. Prints one line
per tool; exits non-zero only when an install was attempted and failed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

# tool -> the Debian packages that bring it (Recommends stay out: chromium's pull in udev, mesa, printing...; a font
# is the one a readable screenshot needs)
TOOLS = {
    Path("/usr/bin/chromium"): ("chromium", "fonts-liberation"),
    Path("/usr/bin/docker-compose"): ("docker-compose",),
    Path("/usr/bin/ccache"): ("ccache",),
    # tests/containers: podman (with runc, the init compose's `init: true` asks for, and the network stack that lets
    # services find each other by name), mmdebstrap for the stand-in base image registries cannot give here
    Path("/usr/bin/podman"): ("podman", "runc", "catatonit", "netavark", "aardvark-dns", "iptables"),
    Path("/usr/lib/podman/aardvark-dns"): ("aardvark-dns", "netavark"),
    Path("/usr/bin/mmdebstrap"): ("mmdebstrap",),
}


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", "-q", *args], env=env, capture_output=True, text=True)


def main(names: list[str]) -> int:
    unknown = set(names) - {tool.name for tool in TOOLS}
    if unknown:
        print(f"ensure_tools: unknown tool {', '.join(sorted(unknown))}; known: {', '.join(t.name for t in TOOLS)}")
        return 2
    wanted_tools = {tool: packages for tool, packages in TOOLS.items() if not names or tool.name in names}
    missing = {tool: packages for tool, packages in wanted_tools.items() if not tool.exists()}
    for tool in wanted_tools.keys() - missing.keys():
        print(f"ensure_tools: {tool} already present")
    if not missing:
        return 0
    wanted = [package for packages in missing.values() for package in packages]
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        print(f"ensure_tools: skipped, {', '.join(map(str, missing))} missing and no apt-get as root here "
              f"(run: sudo apt-get install -y {' '.join(wanted)}); the tests that need them will skip")
        return 0
    for step in (("update",), ("install", "-y", "--no-install-recommends", *wanted)):
        done = _apt(*step)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            print(f"ensure_tools: apt-get {step[0]} failed: {tail[0]}")
            return 1
    print(f"ensure_tools: installed {' '.join(wanted)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
