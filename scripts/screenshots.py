"""Retake docs/screenshots/: a real distributed night (scripts/airflow_local.py), seen in headless Chromium.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots]

It starts Airflow as airflow_local.py does, triggers the demo night (one config's model file is missing: its bench
task is red), waits for it, signs Chromium in with a token from the API server, and captures
  airflow-grid.png     the run's grid with the bench tasks named by config, one red
  vram-history.png     the VRAM history page (/vramwatch/) with that night
Chromium resolves no host but 127.0.0.1, so nothing leaves the machine. Every process stops at the end.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from websockets.sync.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from airflow_local import DAG, REPO, start  # noqa: E402
from support.airflow_cluster import AirflowCluster, free_port  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
WINDOW = (1600, 1000)


class Browser:
    """Headless Chromium driven over the DevTools protocol: navigate, wait for text, capture. A context manager: the
    browser stops at its end."""

    def __init__(self, profile: Path) -> None:
        self.profile = profile
        self.next_id = 0

    def __enter__(self) -> Browser:
        port = free_port()
        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", f"--user-data-dir={self.profile}",
             f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--remote-debugging-port={port}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
                    pages = [t for t in json.loads(response.read()) if t["type"] == "page"]
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.process.kill()
                    raise
                time.sleep(0.5)
        self.socket = connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=30).__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        self.socket.__exit__(*exc_info)
        self.process.terminate()
        self.process.wait(30)

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def open(self, url: str, text: str, timeout_s: float = 90) -> None:
        """Load `url` and wait until the rendered page shows `text` (the React UI renders after load)."""
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout_s
        check = f"document.body && document.body.innerText.includes({json.dumps(text)})"
        while not self.call("Runtime.evaluate", expression=check)["result"].get("value"):
            if time.monotonic() > deadline:
                body = self.call("Runtime.evaluate", expression="document.body && document.body.innerText")
                raise RuntimeError(f"{url} never showed {text!r}; it shows: {str(body)[:1500]}")
            time.sleep(1)
        time.sleep(2)  # charts and icons settle

    def capture(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        print(f"{path}: {path.stat().st_size / 1024:.0f} KiB", flush=True)


def shoot(browser: Browser, cluster: AirflowCluster, run_id: str, out: Path) -> None:
    """Signed in with the API server's token (the UI's own cookie): the run's bench tasks, then the history page."""
    browser.call("Emulation.setDeviceMetricsOverride", width=WINDOW[0], height=WINDOW[1], deviceScaleFactor=1,
                 mobile=False)
    browser.call("Network.enable")
    browser.call("Network.setCookie", name="_token", value=cluster.token(), url=cluster.url, path="/")
    browser.open(f"{cluster.url}/dags/{DAG}/runs/{run_id}/tasks/bench/mapped", "missing-model/native/baseline")
    browser.capture(out / "airflow-grid.png")
    browser.open(f"{cluster.url}/vramwatch/", "deepseek-moe-16b-tiny")
    browser.capture(out / "vram-history.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="vramwatch-screenshots-"))
    cluster = start(folder)
    try:
        run_id = cluster.trigger(DAG, {"force": True})
        print(f"night {run_id}: {cluster.wait_for_run(DAG, run_id, timeout_s=900)}", flush=True)
        with Browser(folder / "chromium-profile") as browser:
            shoot(browser, cluster, run_id, args.out)
    except BaseException:
        print(cluster.log_tails(), file=sys.stderr)
        raise
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
