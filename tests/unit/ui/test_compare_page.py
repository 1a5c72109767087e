"""Two builds compared on the page (issue 16), through the app and a real SQLite warehouse filled through the
Warehouse API: the GET form, each figure in its field's words and unit, and names shown as text (the comparison
itself is built and tested in the report stage: tests/unit/report/test_compare.py)."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from support.samples import XSS_PAYLOAD, night, replace
from support.warehouses import GROWTH_MIB, NEW_BUILD, OLD_BUILD, OOM, REGRESSED, build_record, three_nights

from vramwatch.records import ValidatedNight
from vramwatch.ui.app import create_app
from vramwatch.warehouse.store import Warehouse


@pytest.fixture
def url(sqlite_warehouse_url) -> str:
    return sqlite_warehouse_url


def compare_section(html: str) -> str:
    return html[html.index('<section id="compare">'):html.index('<section id="history">')]


def config_block(section: str, name: str) -> str:
    """The table rows of one config, from its name to the next config."""
    start = section.index(f"<code>{name}</code>")
    end = section.find('<tr class="config-start', start)
    return section[start:end if end != -1 else len(section)]


def cells(block: str, quantity: str) -> list[str]:
    """The A, B, delta and delta % cells of one quantity's row."""
    row = block[block.index(f"<td>{quantity} "):]
    return re.findall(r'<td class="num[^"]*">([^<]*)</td>', row)[:4]


def build_ids(section: str) -> dict[str, str]:
    """commit -> build id, from the first select's options."""
    options = re.findall(r'<option value="(\d+)"[^>]*>([0-9a-z]+) ·', section.split("</select>")[0])
    return {commit: build_id for build_id, commit in options}


def test_the_last_two_builds_are_compared_per_config_by_default(url, tmp_path):
    three_nights(url)
    with TestClient(create_app(url, tmp_path)) as client:
        section = compare_section(client.get("/").text)

    assert '<form method="get" action="#compare"' in section and 'name="a"' in section and 'name="b"' in section
    assert re.search(rf'<option value="\d+" selected>{OLD_BUILD} ·', section.split("</select>")[0])
    assert re.search(rf'<option value="\d+" selected>{NEW_BUILD} ·', section.split("</select>")[1])
    grown = config_block(section, REGRESSED)
    before, after = 10_010.0, 10_010.0 + GROWTH_MIB
    assert cells(grown, "GPU model") == [f"{before:.2f}", f"{after:.2f}", f"+{GROWTH_MIB:.2f}",
                                         f"{100 * GROWTH_MIB / before:+.1f} %"]
    assert cells(grown, "GPU KV") == ["1024.00", "1024.00", "+0.00", "+0.0 %"]
    assert "<td>host KV " not in grown  # empty on both builds: no row
    assert cells(grown, "tg")[:2] == ["118.0", "118.0"]  # speed too, in tok/s
    oom = config_block(section, OOM)
    assert "ok → oom" in oom and cells(oom, "GPU model")[1] == "–"  # no figure on B: a dash, never 0
    assert "2 of 8 configs changed" in section


def test_any_two_builds_can_be_picked_and_an_unknown_one_is_said_in_one_line(url, tmp_path):
    three_nights(url)
    with TestClient(create_app(url, tmp_path)) as client:
        ids = build_ids(compare_section(client.get("/").text))
        swapped = compare_section(client.get("/", params={"a": ids[NEW_BUILD], "b": ids[OLD_BUILD]}).text)
        unknown = compare_section(client.get("/", params={"a": "999", "b": "<script>alert(1)</script>"}).text)

    assert cells(config_block(swapped, REGRESSED), "GPU model")[2] == f"-{GROWTH_MIB:.2f}"
    assert "build &#39;999&#39; is not in the warehouse; build &#39;&lt;script&gt;" in unknown
    assert "pick builds from the lists" in unknown and "<script>" not in unknown
    assert cells(config_block(unknown, REGRESSED), "GPU model")[2] == f"+{GROWTH_MIB:.2f}"  # the default pair


def test_changed_configs_only_keeps_the_configs_whose_figures_or_status_moved(url, tmp_path):
    three_nights(url)
    with TestClient(create_app(url, tmp_path)) as client:
        section = compare_section(client.get("/", params={"changed": "1"}).text)
    assert re.findall(r"<td rowspan=\"\d+\"><code>([^<]*)</code>", section) == [REGRESSED, OOM]
    assert 'name="changed" value="1" checked' in section


def test_one_build_has_nothing_to_compare_and_says_so(url, tmp_path):
    warehouse = Warehouse(url)
    warehouse.store_run("n1", "2026-01-01", build_record(OLD_BUILD), ValidatedNight(accepted=night(), quarantined=[]),
                        "scheduled")
    warehouse.close()
    with TestClient(create_app(url, tmp_path)) as client:
        section = compare_section(client.get("/").text)
    assert "only one build has stored results: a comparison needs two" in section and "<table" not in section


def test_markup_in_a_model_name_or_a_build_is_shown_as_text(url, tmp_path):
    """Stored XSS: names and builds from the warehouse reach the comparison's selects and table."""
    marked = [replace(r, config__model=replace(r.config.model, model=XSS_PAYLOAD))
              for r in night(models=("deepseek-moe-16b",), quants=("Q2_K",))]
    warehouse = Warehouse(url)
    for i, commit in enumerate(("<b>old</b>", "<i>new</i>")):
        warehouse.store_run(f"n{i}", f"2026-01-0{i + 1}", build_record(commit),
                            ValidatedNight(accepted=marked, quarantined=[]), "scheduled")
    warehouse.close()
    with TestClient(create_app(url, tmp_path)) as client:
        html = client.get("/").text
    section = compare_section(html)
    assert XSS_PAYLOAD not in html and "<b>old" not in html and "<i>new" not in html
    assert "&lt;img src=x onerror=" in section and "&lt;b&gt;old" in section
