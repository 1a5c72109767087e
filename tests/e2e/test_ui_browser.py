"""The vramwatch page in a real browser and inside a real Airflow API server.

Headless Chromium (the Debian package; scripts/ensure_tools.py installs it) loads the page from uvicorn on a free
loopback port: the rendered DOM must hold the history charts and the incident, and the screenshot must be a picture,
not a blank page. Then `airflow api-server` starts with our plugins/ folder: it must serve the page under /vramwatch/,
list the plugin in /api/v2/plugins, and its UI must frame the page from the nav entry.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import pytest
from support.samples import XSS_PAYLOAD, XSS_TITLE, markup_named_rows, night
from support.warehouses import NEW_BUILD, REGRESSED, build_record, three_nights

REPO = Path(__file__).resolve().parents[2]

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} missing: run scripts/ensure_tools.py (apt-get install chromium)"
)
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
WINDOW = (1280, 2000)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(url: str, server: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"server exited with {server.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout_s:.0f} s")


def _serve(command: list[str], env: dict, url: str, log: Path, timeout_s: float):
    with log.open("wb") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for(url, server, timeout_s)
    except AssertionError as exc:
        server.terminate()
        server.wait(30)
        raise AssertionError(f"{exc}\n{log.read_text()[-4000:]}") from None
    return server


def _stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{time.monotonic_ns()}"  # a new empty profile each run: no state between loads
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               # Only loopback resolves: pages that name CDNs (GX Data Docs do) send nothing off this machine.
               "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
               f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90)
    shutil.rmtree(profile, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _png_pixels(path: Path) -> tuple[int, int, bytes]:
    """Width, height and the decompressed scanlines of a PNG: enough to tell a picture from a blank page."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    chunks, offset = [], 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if kind == b"IDAT":
            chunks.append(data[offset + 8:offset + 8 + length])
        offset += 12 + length
    return width, height, zlib.decompress(b"".join(chunks))


@pytest.fixture(scope="module")
def warehouse_env(tmp_path_factory):
    """A filled warehouse and a reports folder, passed to servers the way deployments do: environment variables."""
    tmp = tmp_path_factory.mktemp("ui")
    url = f"sqlite:///{tmp / 'warehouse.db'}"
    incident = three_nights(url)
    (tmp / "reports").mkdir()
    (tmp / "reports" / "latest.html").write_text("<html><body><h1>vramwatch report</h1></body></html>")
    env = {**os.environ, "VRAMWATCH_WAREHOUSE_URL": url, "VRAMWATCH_REPORTS_DIR": str(tmp / "reports"),
           "PYTHONPATH": str(REPO / "include")}
    return env, tmp, incident


@needs_chromium
def test_page_renders_in_headless_chromium(warehouse_env):
    env, tmp, incident = warehouse_env
    port = _free_port()
    server = _serve([sys.executable, "-m", "uvicorn", "--factory", "vramwatch.ui.app:create_app", "--host", "127.0.0.1",
                     "--port", str(port)], env, f"http://127.0.0.1:{port}/api/incidents", tmp / "uvicorn.log", 60)
    try:
        page = f"http://127.0.0.1:{port}/"
        dom = _chromium(tmp, "--dump-dom", page).stdout
        shot = tmp / "page.png"
        _chromium(tmp, f"--screenshot={shot}", "--hide-scrollbars", page)
    finally:
        _stop(server)
    assert dom.count('<figure class="vram-chart') == 8 and "<polyline" in dom
    assert f'id="incident-{incident.incident_id}"' in dom and f">{REGRESSED}</code>" in dom
    assert NEW_BUILD in dom
    width, height, pixels = _png_pixels(shot)
    assert (width, height) == WINDOW
    # A blank page compresses to almost nothing and has a handful of byte values; text, tables and charts do not.
    assert shot.stat().st_size > 50_000 and len(set(pixels)) > 64, f"screenshot looks blank: {shot}"
    if os.environ.get("VRAMWATCH_UI_SCREENSHOT"):  # to look at it: VRAMWATCH_UI_SCREENSHOT=/tmp/page.png pytest ...
        shutil.copy(shot, os.environ["VRAMWATCH_UI_SCREENSHOT"])


def _title(dom: str) -> str:
    found = re.search(r"<title>(.*?)</title>", dom, re.S)
    return found.group(1).strip() if found else ""


@needs_chromium
def test_a_markup_model_name_runs_no_script_in_data_docs_or_the_report(tmp_path):
    """Fault: stored XSS. A quarantined row whose model name was `<img src=x onerror=...>` went raw into the GX Data
    Docs, which the page serves under /reports/ with no Content-Security-Policy, and the payload ran in Chromium.
    Here the night is validated to Data Docs, stored and reported as the pipeline does, served by the UI app and
    loaded in Chromium: the payload shows as text and sets no title. A file that holds raw markup anyway (injected.html)
    shows that the policy alone stops script."""
    from vramwatch.records import NightVerdicts
    from vramwatch.report.write import report_for_run
    from vramwatch.validate.gate import validate_night
    from vramwatch.warehouse.store import Warehouse

    reports, url, night_ = tmp_path / "reports", f"sqlite:///{tmp_path / 'warehouse.db'}", "2026-01-02"
    warehouse = Warehouse(url)
    validated = validate_night([*night(quants=("Q2_K",)), *markup_named_rows()],
                               data_docs_dir=reports / night_ / "data_docs")
    warehouse.store_run("xss", night_, build_record(NEW_BUILD), validated, "test")
    report_for_run(warehouse, "xss", NightVerdicts(incidents=[]), reports)
    warehouse.close()
    assert len(validated.quarantined) == 2
    (reports / "injected.html").write_text(f"<html><head><title>injected</title></head><body>{XSS_PAYLOAD}"
                                           f"<script>document.title='{XSS_TITLE}'</script></body></html>")

    env = {**os.environ, "VRAMWATCH_WAREHOUSE_URL": url, "VRAMWATCH_REPORTS_DIR": str(reports),
           "PYTHONPATH": str(REPO / "include")}
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = _serve([sys.executable, "-m", "uvicorn", "--factory", "vramwatch.ui.app:create_app", "--host",
                     "127.0.0.1", "--port", str(port)], env, f"{base}/api/incidents", tmp_path / "uvicorn.log", 60)
    (docs_page,) = (reports / night_ / "data_docs" / "validations").rglob("*.html")
    pages = [docs_page.relative_to(reports).as_posix(), f"{night_}/summary.html", "injected.html"]
    try:
        loaded = {}
        for page in pages:
            with urllib.request.urlopen(f"{base}/reports/{page}", timeout=30) as response:
                policy = response.headers["Content-Security-Policy"] or ""
            # virtual time: the failed image load and its handler would have run by the time the DOM is dumped
            loaded[page] = policy, _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom",
                                             f"{base}/reports/{page}").stdout
    finally:
        _stop(server)
    for page, (policy, dom) in loaded.items():
        assert _title(dom) and _title(dom) != XSS_TITLE, f"the payload ran in {page}"
        assert "default-src 'none'" in policy, page
    for page in pages[:2]:  # GX and the report show the model name as text
        assert "&lt;img src=x onerror=" in loaded[page][1], page


def _api_server(warehouse_env, airflow_sqlite_db, name: str, auth_env: dict):
    """`airflow api-server` on a free loopback port, SQLite metadata, our plugins/, the simple auth manager."""
    env, tmp, incident = warehouse_env
    home = tmp / name
    (home / "dags").mkdir(parents=True)
    env = {
        **env,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_sqlite_db(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__AUTH_MANAGER":
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        **auth_env,
    }
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = _serve([AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], env,
                    f"{base}/api/v2/monitor/health", home / "api-server.log", 180)
    yield base, home, incident
    _stop(server)


@pytest.fixture(scope="module")
def airflow_api_server(warehouse_env, airflow_sqlite_db):
    # Every request is an admin: the REST API and the UI need no login in these tests.
    yield from _api_server(warehouse_env, airflow_sqlite_db, "airflow",
                           {"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True"})


@pytest.fixture(scope="module")
def airflow_api_server_with_login(warehouse_env, airflow_sqlite_db):
    """A deployment with real users: one viewer, "ops", whose password is in a file as the simple manager reads it."""
    _env, tmp, _incident = warehouse_env
    passwords = tmp / "passwords.json"
    passwords.write_text('{"ops": "night-shift"}')
    yield from _api_server(warehouse_env, airflow_sqlite_db, "airflow-login", {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "ops:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
    })


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read().decode()


def test_airflow_api_server_mounts_the_page_and_lists_the_plugin(airflow_api_server):
    import json

    base, _tmp, incident = airflow_api_server
    status, page = _get(f"{base}/vramwatch/")
    assert status == 200 and "vramwatch · VRAM history" in page
    assert f'id="incident-{incident.incident_id}"' in page
    status, body = _get(f"{base}/api/v2/plugins")
    plugins = {p["name"]: p for p in json.loads(body)["plugins"]}
    assert "vramwatch" in plugins, f"plugin missing; import errors: {_get(f'{base}/api/v2/plugins/importErrors')[1]}"
    ours = plugins["vramwatch"]
    assert [a["url_prefix"] for a in ours["fastapi_apps"]] == ["/vramwatch"]
    assert [(v["name"], v["href"], v["url_route"]) for v in ours["external_views"]] == [
        ("VRAM history", "vramwatch/", "vramwatch")
    ]


@needs_chromium
def test_airflow_ui_frames_the_page_from_its_nav_entry(airflow_api_server):
    base, tmp, _incident = airflow_api_server
    shot = tmp / "airflow.png"
    # The UI is a React app: give its scripts virtual time to fetch the plugin list and build the iframe.
    dom = _chromium(tmp, "--virtual-time-budget=15000", "--dump-dom", f"{base}/plugin/vramwatch").stdout
    assert "<iframe" in dom and 'src="vramwatch/"' in dom, dom[-3000:]
    _chromium(tmp, "--virtual-time-budget=15000", f"--screenshot={shot}", f"{base}/plugin/vramwatch")
    assert shot.stat().st_size > 20_000


def test_the_page_needs_an_airflow_sign_in(airflow_api_server_with_login):
    import json

    base, _home, incident = airflow_api_server_with_login
    for path in ("vramwatch/", "vramwatch/api/incidents", "vramwatch/reports/latest.html"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            _get(f"{base}/{path}")
        assert refused.value.code == 401, path
        assert "sign in to Airflow" in refused.value.read().decode()

    login = urllib.request.Request(f"{base}/auth/token", data=json.dumps({"username": "ops", "password": "night-shift"})
                                   .encode(), headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(login, timeout=30) as response:
        token = json.loads(response.read())["access_token"]
    as_bearer = urllib.request.Request(f"{base}/vramwatch/", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(as_bearer, timeout=30) as response:
        assert f'id="incident-{incident.incident_id}"' in response.read().decode()
    as_ui_session = urllib.request.Request(f"{base}/vramwatch/api/incidents", headers={"Cookie": f"_token={token}"})
    with urllib.request.urlopen(as_ui_session, timeout=30) as response:  # the cookie the UI's iframe sends
        assert [i["incident_id"] for i in json.loads(response.read())] == [incident.incident_id]
    forged = urllib.request.Request(f"{base}/vramwatch/", headers={"Authorization": f"Bearer {token[:-4]}AAAA"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(forged, timeout=30)
    assert refused.value.code in (401, 403)
