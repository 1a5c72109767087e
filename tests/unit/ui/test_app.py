"""The vramwatch page and its JSON endpoints, against a real SQLite warehouse filled through the Warehouse API
(support.warehouses.three_nights, which tests/e2e/test_ui_browser.py serves to a real browser too)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support.samples import XSS_PAYLOAD, bisection, night, replace, result
from support.two_gpu import two_gpu_result
from support.warehouses import (
    GROWTH_MIB,
    NEW_BUILD,
    NIGHTS,
    OLD_BUILD,
    OOM,
    REGRESSED,
    build_record,
    three_nights,
)
from support.years import Years, fill

from vramwatch.alerts.delivery import DeliveryLog
from vramwatch.records import ValidatedNight
from vramwatch.report.history_chart import X_TITLE
from vramwatch.report.style import CSP_HASH as REPORT_STYLE_HASH
from vramwatch.ui.app import HISTORY_OFFSET_MAX, HISTORY_PAGE_MAX, TEMPLATES, create_app
from vramwatch.warehouse.store import Warehouse


@pytest.fixture
def reports(tmp_path) -> Path:
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "latest.html").write_text("<html><body><h1>vramwatch report 2026-01-03</h1></body></html>")
    return folder


@pytest.fixture
def filled(sqlite_warehouse_url, reports):
    url = sqlite_warehouse_url
    incident = three_nights(url)
    with TestClient(create_app(url, reports)) as client:
        yield client, incident


def test_page_shows_latest_night_incident_seed_table_and_charts(filled):
    client, incident = filled
    page = client.get("/")
    assert page.status_code == 200
    html = page.text
    assert "Latest night <b>2026-01-03</b>" in html
    # the incident, with its delta and builds
    assert f'id="incident-{incident.incident_id}"' in html
    assert ">deepseek-moe-16b/Q4_K_M/baseline</code>" in html
    assert "+310" in html and "+3.1 %" in html
    assert f"<code>{OLD_BUILD}</code> → <code>{NEW_BUILD}</code>" in html
    # the seed table: tonight's VRAM (model + KV + compute buffers) and the config that ran out of memory
    for model in ("deepseek-moe-16b", "phi-3.5-moe"):
        assert f"<h3>{model}</h3>" in html
    baseline = (10_010.0 + GROWTH_MIB + 1_024.0 + 204.5) / 1024
    offload = (640.0 + 1_024.0 + 204.5) / 1024
    assert f"{baseline:.2f} GiB" in html and f"{offload:.2f} GiB" in html
    assert f"{100 * (baseline - offload) / baseline:.1f} %" in html
    assert '<span class="muted">oom</span>' in html
    baseline_speed, offload_speed = result(mode="baseline"), result(mode="offload")
    assert f"<td class=\"num\">{baseline_speed.tg.avg_ts:.1f}</td>" in html
    assert f"<td class=\"num\">{offload_speed.pp.avg_ts:.1f}</td>" in html
    # one chart per config (2 models x 2 quants x 2 modes), the regressed one framed red, the new build marked
    assert html.count('<figure class="vram-chart') == 8
    assert html.count('<figure class="vram-chart flagged">') == 1
    assert f"build {OLD_BUILD} -&gt; {NEW_BUILD}" in html
    assert "2026-01-03 (run scheduled__2026-01-03): oom" in html
    assert 'href="reports/latest.html"' in html
    # the energy history: a J/token chart per config, which says the host's energy was not measured (no RAPL)
    assert html.count('<figure class="energy-chart') == 8 and "energy not measured (" not in html
    assert html.count("GPU energy (NVML) on NVIDIA H100 80GB HBM3; host energy not measured") == 8
    assert f"tg energy {result(mode='offload').energy.tg.j_per_tok:.4f} J/tok" in html


def test_the_vram_and_energy_grids_are_one_macro_drawn_alike(filled):
    """Both history sections come from one chart_grid macro: the template writes a chart's markup once, and each
    section's charts have the same markup but for the figure's class."""
    template = (TEMPLATES / "index.html").read_text()
    assert template.count("<figure") == 1 and template.count("chart_grid(") == 3  # defined once, drawn twice
    client, _ = filled
    html = client.get("/").text

    def tags(section: str) -> list[str]:
        text = html[html.index(f'<section id="{section}">'):]
        return re.findall(r"</?\w+", text[text.index("<h3>"):text.index("</section>")])

    history, energy = tags("history"), tags("energy")
    assert history[:history.index("<svg")] == energy[:energy.index("<svg")]  # h3, div, figure, figcaption, ...


def test_an_incidents_bisection_shows_on_the_page_escaped(sqlite_warehouse_url, reports):
    url = sqlite_warehouse_url
    incident = three_nights(url)
    with TestClient(create_app(url, reports)) as client:
        assert 'id="bisections"' not in client.get("/").text  # no search yet, no section
        warehouse = Warehouse(url)
        warehouse.save_bisection(incident.incident_id, bisection(subject=XSS_PAYLOAD))
        warehouse.close()
        html = client.get("/").text

    section = html.split('<section id="bisections">', 1)[1].split("</section>", 1)[0]
    assert f'<a href="#incident-{incident.incident_id}">#{incident.incident_id}</a>' in section
    assert "236.26 → 260.39 MiB" in section and "5 builds: 40 min build, 3 min bench" in section
    assert ('release <a href="https://pypi.org/project/llama-cpp-python/0.3.33/"><code>0.3.33</code></a>: '
            "&lt;img src=x") in section and XSS_PAYLOAD not in html
    assert f"llama.cpp <code>{'b' * 12}..{'c' * 12}</code> to bisect next" in section  # what the release narrows


def test_report_is_served_beside_the_page(filled):
    client, _ = filled
    report = client.get("/reports/latest.html")
    assert report.status_code == 200 and "vramwatch report 2026-01-03" in report.text


def test_the_page_says_when_the_latest_nights_alerts_found_no_channel(filled, reports):
    """Fault: with no alert channel configured, the page looked the same as on a night that paged the team."""
    client, _ = filled
    assert 'id="alerts-off"' not in client.get("/").text  # the night's alert step has not run: nothing to say
    log = DeliveryLog.for_night(reports, NIGHTS[-1])

    log.record_channels(["slack"])
    assert 'id="alerts-off"' not in client.get("/").text

    log.record_channels([])
    html = client.get("/").text
    banner = html.split('<p class="alerts-off" role="alert" id="alerts-off">', 1)[1].split("</p>", 1)[0]
    assert "<strong>Alerts are off:</strong>" in banner and f"the {NIGHTS[-1]} night" in banner
    assert "paged no one" in banner


def test_history_endpoint_filters_by_config(filled):
    client, _ = filled
    rows = client.get("/api/history", params={"config_id": REGRESSED}).json()
    assert [r["night"] for r in rows] == list(NIGHTS)
    assert {r["config_name"] for r in rows} == {REGRESSED}
    by_id = client.get("/api/history", params={"config_id": rows[0]["config_id"]}).json()
    assert by_id == rows
    assert [r["gpu_model_mib"] for r in rows] == [10_010.0, 10_010.0, 10_010.0 + GROWTH_MIB]
    assert [r["llama_cpp_commit"] for r in rows] == [OLD_BUILD, OLD_BUILD, NEW_BUILD]
    everything = client.get("/api/history").json()
    assert len(everything) == 3 * 8
    oom = [r for r in everything if r["config_name"] == OOM and r["night"] == NIGHTS[-1]]
    assert oom[0]["status"] == "oom" and oom[0]["vram_gib"] is None  # missing stays null, not 0 or NaN
    assert len(client.get("/api/history", params={"limit": 5}).json()) == 5
    assert client.get("/api/history", params={"limit": 0}).status_code == 422


def test_history_comes_in_capped_pages(filled):
    """Fault: /api/history returned all of it (176 MB for 3 years x 100 configs) to any viewer."""
    client, _ = filled
    assert client.get("/api/history", params={"limit": 10_000}).status_code == 422  # above the cap
    first = client.get("/api/history", params={"limit": 10})
    second = client.get("/api/history", params={"limit": 10, "offset": first.headers["X-Next-Offset"]})
    last = client.get("/api/history", params={"limit": 10, "offset": second.headers["X-Next-Offset"]})
    assert [len(page.json()) for page in (first, second, last)] == [10, 10, 4]
    assert "X-Next-Offset" not in last.headers
    everything = client.get("/api/history", params={"limit": 24}).json()  # oldest first, as each page is
    assert last.json() + second.json() + first.json() == everything


def test_history_pages_deeper_by_cursor_and_refuses_a_deep_offset_saying_so(filled):
    """Fault: the API paged only by offset, which reads and drops every row it skips (about 1 s for the oldest page
    of 3 years x 100 configs on PostgreSQL). Each page names the next by X-Next-Cursor; an offset past
    HISTORY_OFFSET_MAX, or beside a cursor, is a 422 that names the cursor; a cursor it never gave is a 422."""
    client, _ = filled
    pages = [client.get("/api/history", params={"limit": 10})]
    while "X-Next-Cursor" in pages[-1].headers and len(pages) < 5:
        pages.append(client.get("/api/history", params={"limit": 10, "after": pages[-1].headers["X-Next-Cursor"]}))
    assert [len(page.json()) for page in pages] == [10, 10, 4]
    assert "X-Next-Offset" not in pages[1].headers  # a cursor's page names the next by cursor only
    everything = client.get("/api/history", params={"limit": 24}).json()
    assert [row for page in reversed(pages) for row in page.json()] == everything
    for refused in ({"offset": HISTORY_OFFSET_MAX + 1}, {"offset": 10, "after": pages[0].headers["X-Next-Cursor"]}):
        answer = client.get("/api/history", params=refused)
        assert answer.status_code == 422 and "after=" in answer.json()["fix"], answer.text
    forged = client.get("/api/history", params={"after": "bm90IGEgY3Vyc29y"})
    assert forged.status_code == 422 and forged.json()["error"].startswith("not a history cursor")


def test_two_runs_in_one_night_are_two_points_on_the_chart(sqlite_warehouse_url, tmp_path):
    """Plots were per date: a night's second run collapsed onto the first."""
    url = sqlite_warehouse_url
    warehouse = Warehouse(url)
    for run_id, commit in (("scheduled__2026-01-05", OLD_BUILD), ("manual__2026-01-05T14:00", NEW_BUILD)):
        warehouse.store_run(run_id, "2026-01-05", build_record(commit), ValidatedNight(accepted=night(), quarantined=[]),
                            "manual")
    warehouse.close()
    with TestClient(create_app(url, tmp_path)) as client:
        html = client.get("/").text
    history = html[html.index('<section id="history">'):html.index('<section id="energy">')]
    charts = history.split('<figure class="vram-chart')[1:]
    assert len(charts) == 8 and all(chart.count("<circle ") == 2 for chart in charts)
    assert "2026-01-05 (run scheduled__2026-01-05)" in charts[0]
    assert "2026-01-05 (run manual__2026-01-05T14:00)" in charts[0]
    assert f"build {OLD_BUILD} -&gt; {NEW_BUILD}" in charts[0]
    assert f">{X_TITLE}</text>" in charts[0] and ">memory (GiB)</text>" in charts[0]  # axis titles, with the unit


def test_the_largest_api_page_and_the_page_stay_under_5_mb_on_a_big_warehouse(tmp_path):
    """Fault: /api/history returned 176 MB (3 years x 100 configs) to any viewer; every response must stay <= 5 MB.
    100 configs with every field a GPU row carries, 12 nights: more rows than the largest page holds."""
    url = f"sqlite:///{tmp_path / 'big.db'}"
    warehouse = Warehouse(url)
    fill(warehouse, Years(nights=12, models=10))
    warehouse.close()
    with TestClient(create_app(url, tmp_path)) as client:
        largest = client.get("/api/history", params={"limit": HISTORY_PAGE_MAX})
        page = client.get("/")
    assert len(largest.json()) == HISTORY_PAGE_MAX and largest.headers["X-Next-Offset"] == str(HISTORY_PAGE_MAX)
    assert len(largest.content) <= 5 * 2**20
    assert page.status_code == 200 and len(page.content) <= 5 * 2**20
    assert page.text.count('<figure class="vram-chart') == 100


def test_incidents_endpoint_lists_open_incidents(sqlite_warehouse_url, filled):
    client, incident = filled
    listed = client.get("/api/incidents").json()
    assert listed == [incident.to_dict() | {"is_new": False}]
    warehouse = Warehouse(sqlite_warehouse_url)
    warehouse.resolve_incident(incident.incident_id, "2026-01-04")
    warehouse.close()
    assert client.get("/api/incidents").json() == []
    assert [i["state"] for i in client.get("/api/incidents", params={"include_resolved": True}).json()] == ["resolved"]


def test_the_published_site_is_served_under_site_with_the_pages_headers(sqlite_warehouse_url, reports):
    from vramwatch.report.site import publish

    url = sqlite_warehouse_url
    three_nights(url)
    warehouse = Warehouse(url)
    publish(warehouse, reports / "site")  # where the nightly's publish task writes it
    warehouse.close()
    with TestClient(create_app(url, reports)) as client:
        for path in ("/site/", "/site/index.html", "/site/configs.html", "/site/site.css"):
            served = client.get(path)
            assert served.status_code == 200, path
            assert "default-src 'none'" in served.headers["content-security-policy"], path
        assert "Open incidents" in client.get("/site/").text


def test_with_a_sign_in_check_every_path_is_refused_without_it(sqlite_warehouse_url, reports):
    from fastapi import HTTPException

    async def signed_in(request) -> str:
        if request.headers.get("x-user") != "ops":
            raise HTTPException(status_code=401, detail="Not authenticated")
        return "ops"

    url = sqlite_warehouse_url
    three_nights(url)
    with TestClient(create_app(url, reports, authenticate=signed_in)) as client:
        (reports / "site").mkdir()
        (reports / "site" / "index.html").write_text("<html>the published site</html>")
        for path in ("/", "/api/history", "/api/incidents", "/reports/latest.html", "/site/"):
            refused = client.get(path)
            assert (refused.status_code, refused.json()["error"]) == (401, "Not authenticated"), path
            assert "sign in to Airflow" in refused.json()["fix"]
            assert client.get(path, headers={"x-user": "ops"}).status_code == 200, path


def test_empty_warehouse_says_no_nights_yet(tmp_path):
    with TestClient(create_app(f"sqlite:///{tmp_path / 'empty.db'}", tmp_path / "no-reports")) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert "No nights yet" in page.text and "Latest report" not in page.text
        assert client.get("/api/history").json() == []
        assert client.get("/api/incidents").json() == []


def test_unreachable_warehouse_is_a_clear_503(tmp_path):
    url = "postgresql+psycopg2://nobody@127.0.0.1:1/none"  # nothing listens on port 1
    with TestClient(create_app(url, tmp_path)) as client:
        page = client.get("/")
        assert page.status_code == 503
        assert "cannot open the warehouse" in page.text and "VRAMWATCH_WAREHOUSE_URL" in page.text
        api = client.get("/api/incidents")
        assert api.status_code == 503 and api.json()["error"].startswith("cannot open the warehouse")


def test_cpu_only_night_charts_host_memory_and_says_no_gpu_in_the_seed_table(tmp_path):
    url = f"sqlite:///{tmp_path / 'cpu.db'}"
    warehouse = Warehouse(url)
    warehouse.store_run("manual__cpu", "2026-01-05", build_record(OLD_BUILD),
                        ValidatedNight(accepted=night(gpu=False), quarantined=[]), "manual")
    warehouse.close()
    with TestClient(create_app(url, tmp_path)) as client:
        html = client.get("/").text
    assert html.count('<span class="muted">no GPU</span>') == 8  # baseline and offload of 4 model x quant rows
    assert html.count("no GPU: host RAM (Intel(R) Xeon(R) CPU @ 2.20GHz)") == 8
    host_mib = 10_010.0 + 1_024.0 + 300.0  # deepseek Q4_K_M: the model, KV and compute buffers, all in host RAM
    assert f"{host_mib / 1024:.2f} GiB" in html
    assert '<figure class="energy-chart' not in html  # no GPU and no RAPL: no energy to draw, and why
    assert html.count("energy not measured (no GPU: GPU energy not measured; host energy not measured: no RAPL") == 8


def test_every_response_forbids_scripts_and_sniffing(sqlite_warehouse_url, reports):
    """Fault: stored XSS. The page, its API and every file under /reports (Data Docs included) were served with no
    Content-Security-Policy, so markup that reached a report could run script on the Airflow origin."""
    from fastapi import HTTPException

    async def ops_only(request) -> None:
        if request.headers.get("x-user") != "ops":
            raise HTTPException(status_code=401, detail="Not authenticated")

    (reports / "injected.html").write_text("<script>document.title='xss-ran'</script>")
    url = sqlite_warehouse_url
    three_nights(url)
    with TestClient(create_app(url, reports, authenticate=ops_only), headers={"x-user": "ops"}) as client:
        responses = [client.get(path) for path in ("/", "/static/page.css", "/api/incidents", "/reports/latest.html",
                                                   "/reports/injected.html", "/reports/missing.html")]
        responses.append(client.get("/", headers={"x-user": "nobody"}))
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 200, 404, 401]
    for response in responses:
        policy = dict(d.strip().split(" ", 1) for d in response.headers["content-security-policy"].split(";"))
        assert policy["default-src"] == "'none'" and "script-src" not in policy, response.url
        assert "unsafe-inline" not in response.headers["content-security-policy"]
        assert policy["frame-ancestors"] == "'self'" and policy["img-src"] == "'self'"
        assert policy["form-action"] == "'self'"  # the build comparison's form submits to the page, nowhere else
        assert policy["style-src"] == f"'self' {REPORT_STYLE_HASH}"  # the stylesheet, and the report's inline CSS
        assert response.headers["x-content-type-options"] == "nosniff"



def test_a_model_file_that_was_never_made_has_no_size_not_zero(tmp_path):
    """A missing model source's configs were shown with "File size 0.00 GiB": a figure not measured is absent."""
    url = f"sqlite:///{tmp_path / 'missing.db'}"
    missing = [replace(r, config__model=replace(r.config.model, file_bytes=0, error="no such file"), status="invalid_model")
               for r in night(models=("phi-3.5-moe",), quants=("Q2_K",))]
    warehouse = Warehouse(url)
    warehouse.store_run("manual__missing", "2026-01-05", build_record(OLD_BUILD),
                        ValidatedNight(accepted=night(models=("deepseek-moe-16b",)) + missing, quarantined=[]), "manual")
    warehouse.close()
    with TestClient(create_app(url, tmp_path)) as client:
        html = client.get("/").text
    assert html.count('<span class="muted">no file</span>') == 1 and "0.00 GiB" not in html


@pytest.mark.parametrize("link", ["javascript:alert(document.domain)", "  JaVaScRiPt:alert(1)", "java\tscript:alert(1)",
                                  "data:text/html,<script>alert(1)</script>", "https://x.example/\" onclick=\"a()"])
def test_a_culprit_link_that_is_not_a_plain_http_url_is_not_a_link(sqlite_warehouse_url, reports, link):
    """Fault: the page rendered a stored culprit link as it was, so `href="javascript:..."` reached the browser
    (only the CSP kept it from running). Only http(s) links are links now; the culprit still shows, as text."""
    url = sqlite_warehouse_url
    incident = three_nights(url)
    found = bisection()
    warehouse = Warehouse(url)
    warehouse.save_bisection(incident.incident_id, dataclasses.replace(
        found, culprit=dataclasses.replace(found.culprit, link=link)))
    warehouse.close()
    with TestClient(create_app(url, reports)) as client:
        html = client.get("/").text
    section = html.split('<section id="bisections">', 1)[1].split("</section>", 1)[0]
    assert "release <a><code>0.3.33</code></a>" in section
    assert "javascript:" not in section.lower() and "data:" not in section and "onclick" not in section


def test_a_history_offset_past_any_row_is_refused_not_a_server_error(filled):
    """Fault: /api/history?offset=99999999999999999999 was a 500 (the database cannot hold the number)."""
    client, _ = filled
    assert client.get("/api/history", params={"offset": "99999999999999999999"}).status_code == 422
    assert client.get("/api/history", params={"offset": 10_000}).json() == []  # past the rows: an empty page


def test_the_csp_in_the_reliability_notes_is_the_apps_own():
    """Fault: docs/RELIABILITY.md quoted a policy the app does not send (img-src data:, form-action 'none')."""
    from vramwatch.ui.app import CONTENT_SECURITY_POLICY

    notes = (Path(__file__).resolve().parents[3] / "docs" / "RELIABILITY.md").read_text()
    (quoted,) = re.findall(r"`Content-Security-Policy: ([^`]+)`", notes)
    assert quoted == CONTENT_SECURITY_POLICY.replace(REPORT_STYLE_HASH, "<report CSS hash>")


def test_the_page_shows_each_gpu_of_a_split_and_the_sum(sqlite_warehouse_url, tmp_path):
    url = sqlite_warehouse_url
    warehouse = Warehouse(url)
    warehouse.store_run("scheduled__2026-01-05", "2026-01-05", build_record(OLD_BUILD), ValidatedNight(
        accepted=[*night(), two_gpu_result("phi-3.5-moe-Q8_0-2gpu-layer")], quarantined=[]), "scheduled")
    warehouse.close()
    with TestClient(create_app(url, tmp_path)) as client:
        html = client.get("/").text
    section = html[html.index('<section id="gpus">'):]
    section = section[:section.index("</section>")]
    assert "phi-3.5-moe/Q8_0/baseline-2gpu-layer: VRAM per GPU (2 GPUs, split by layer, even shares)" in section
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", section)
    assert cells == ["CUDA0", "22403.48", "272.00", "118.02", "–", "22793.50", "23393.50",
                     "CUDA1", "19901.01", "240.00", "212.51", "–", "20353.52", "20953.52",
                     "sum", "42304.49", "512.00", "330.53", "0.00", "43147.02", "44347.02"]
