"""The published site in real headless Chromium, every host but 127.0.0.1 unresolvable: a crawl from the index over
every link (served by `python -m http.server`, as the README serves it, and by the page's app under /site/ with
its Content-Security-Policy, as the Airflow plugin serves it) finds no broken link or anchor, no console
error, no request for anything but the site's own files; the first screen says in one line whether the last night
regressed, and what; and the index reads the same from file://."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urldefrag

import pytest
from support.airflow_cluster import free_port
from support.browser import CHROMIUM, Browser
from support.warehouses import GROWTH_MIB, REGRESSED, published_history

from vramwatch.report.site import publish
from vramwatch.warehouse.store import Warehouse

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"{CHROMIUM} missing: run scripts/ensure_tools.py (apt-get install chromium)")
LINKS = "[...document.querySelectorAll('a[href], link[href]')].map(e => e.href)"
IDS = "[...document.querySelectorAll('[id]')].map(e => e.id)"
FIRST_SCREEN = ("(() => { const v = document.querySelector('.verdict'); const r = v.getBoundingClientRect();"
                " return [v.innerText, r.bottom <= window.innerHeight, getComputedStyle(v).display]; })()")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site as the nightly publishes it: in the reports folder's site/."""
    tmp = tmp_path_factory.mktemp("site")
    url = f"sqlite:///{tmp / 'warehouse.db'}"
    published_history(url)
    warehouse = Warehouse(url)
    try:
        publish(warehouse, tmp / "reports" / "site")
    finally:
        warehouse.close()
    return tmp / "reports" / "site"


@pytest.fixture(scope="module", params=["http.server", "page app"])
def served(request, site):
    """The site's base URL: served by `python -m http.server`, then by the page's app (what the Airflow plugin
    mounts), under /site/ with its Content-Security-Policy."""
    port = free_port()
    if request.param == "http.server":
        command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(site)]
        base = f"http://127.0.0.1:{port}/"
    else:
        command = [sys.executable, "-m", "uvicorn", "--factory", "vramwatch.ui.app:create_app", "--host", "127.0.0.1",
                   "--port", str(port)]
        base = f"http://127.0.0.1:{port}/site/"
    env = {**os.environ, "VRAMWATCH_REPORTS_DIR": str(site.parent), "VRAMWATCH_WAREHOUSE_URL": "sqlite://",
           "PYTHONPATH": str(REPO / "include")}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(base, timeout=5).close()
            break
        except OSError:
            assert time.monotonic() < deadline and server.poll() is None, f"{request.param} did not start"
            time.sleep(0.2)
    yield base
    server.terminate()
    server.wait(30)


def _problems(events: list[dict], base: str) -> list[str]:
    """Console errors, exceptions, failed loads and requests for anything but the site's own files."""
    found = []
    for event in events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            found.append(f"console {params['type']}: {params['args']}")
        elif method == "Runtime.exceptionThrown":
            found.append(f"exception: {params['exceptionDetails'].get('text')}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            found.append(f"log error: {params['entry']['text']} ({params['entry'].get('url', '')})")
        elif method == "Network.requestWillBeSent" and not params["request"]["url"].startswith((base, "data:")):
            found.append(f"request off the site: {params['request']['url']}")
        elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
            found.append(f"{params['response']['status']}: {params['response']['url']}")
        elif method == "Network.loadingFailed":
            found.append(f"load failed: {params.get('errorText')}")
    return found


def test_crawling_the_whole_site_finds_no_broken_link_no_console_error_and_no_request_off_the_machine(
        served, site, tmp_path):
    pages, queue, anchors, wanted, problems = set(), [served + "index.html"], {}, [], []
    with Browser(tmp_path / "profile") as browser:
        for domain in ("Network", "Runtime", "Log", "Page"):
            browser.call(f"{domain}.enable")
        while queue:
            url = queue.pop()
            if url in pages:
                continue
            pages.add(url)
            browser.events.clear()
            browser.open(url, "vramwatch", settle_s=0.2)
            browser.evaluate("1")  # a last round trip: the events of the load are read by now
            problems += [f"{url}: {problem}" for problem in _problems(browser.events, served)]
            anchors[url] = set(browser.evaluate(IDS))
            for link in browser.evaluate(LINKS):
                target, fragment = urldefrag(link)
                if not target.startswith(served):
                    problems.append(f"{url}: links off the site: {link}")
                elif target.endswith(".html"):
                    queue.append(target)
                    if fragment:
                        wanted.append((url, target, fragment))
                else:  # a download or the stylesheet: it must be there
                    with urllib.request.urlopen(target, timeout=10) as response:
                        assert response.status == 200, target
    problems += [f"{page}: #{fragment} is not on {target}" for page, target, fragment in wanted
                 if fragment not in anchors.get(target, set())]
    assert not problems, "\n".join(problems[:30])
    assert pages == {served + str(page.relative_to(site)) for page in site.rglob("*.html")}  # it reached every page


def test_the_first_screen_answers_did_the_last_night_regress_and_what_in_one_line(served, site, tmp_path):
    with Browser(tmp_path / "profile") as browser:
        for url in (served + "index.html", (site / "index.html").as_uri()):  # served, and from file://
            browser.open(url, "Paged", settle_s=0.2)
            line, on_first_screen, display = browser.evaluate(FIRST_SCREEN)
            assert on_first_screen and display == "block", url
            assert "Paged: 1 regression(s) tonight" in line and f"{REGRESSED}: GPU model +{GROWTH_MIB:.2f} MiB" in line
            assert "\n" not in line.strip()
