"""Headless Chromium driven over the DevTools protocol, with no host but 127.0.0.1 resolvable: nothing a page names
elsewhere can leave the machine. scripts/screenshots.py pictures pages with it; the published site's crawl test
(tests/e2e/test_site_browser.py) reads what each page logged and asked the network for."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.request
from pathlib import Path

from support.airflow_cluster import free_port
from websockets.sync.client import connect

CHROMIUM = "/usr/bin/chromium"
WINDOW = (1600, 1000)


class Browser:
    """Headless Chromium: navigate, wait for text, capture. A context manager: the browser stops at its end. Every
    DevTools event it receives (console messages, requests, failed loads) is kept in `events` until cleared."""

    def __init__(self, profile: Path, window: tuple[int, int] = WINDOW) -> None:
        self.profile = profile
        self.window = window
        self.next_id = 0
        self.events: list[dict] = []

    def __enter__(self) -> Browser:
        port = free_port()
        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", f"--user-data-dir={self.profile}",
             f"--window-size={self.window[0]},{self.window[1]}", f"--remote-debugging-port={port}", "about:blank"],
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
            if "method" in message:
                self.events.append(message)

    def evaluate(self, expression: str) -> object:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def open(self, url: str, text: str, timeout_s: float = 90, settle_s: float = 2) -> None:
        """Load `url` and wait until the rendered page shows `text` (the React UI renders after load)."""
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout_s
        check = f"document.readyState === 'complete' && document.body && document.body.innerText.includes({json.dumps(text)})"
        while not self.evaluate(check):
            if time.monotonic() > deadline:
                body = self.evaluate("document.body && document.body.innerText")
                raise RuntimeError(f"{url} never showed {text!r}; it shows: {str(body)[:1500]}")
            time.sleep(0.2)
        time.sleep(settle_s)  # charts and icons settle

    def capture(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        print(f"{path}: {path.stat().st_size / 1024:.0f} KiB", flush=True)
