"""The published site (vramwatch.report.site) on a real SQLite warehouse: what it holds, that every figure names the
command that reproduces it, its downloads, and that a new night rewrites only what it changes."""

from __future__ import annotations

import csv
import gzip
import hashlib
import html
import io
import json
import re
import shlex
from contextlib import closing
from pathlib import Path

import pytest
from support.samples import night, replace, result
from support.two_gpu import two_gpu_result
from support.warehouses import NEW_BUILD, REGRESSED, build_record, night_of, published_history

from vramwatch.cli.main import build_parser
from vramwatch.records import BenchKnobs, MeasuredNight, ValidatedNight
from vramwatch.report.site import MANIFEST, bench_command, publish, slug
from vramwatch.report.tables import GPU_SIZES_GIB
from vramwatch.rows import FIELD_NAMES, flatten
from vramwatch.warehouse.store import Warehouse

NIGHTS = 12
SPLIT_KNOBS = ("gpus", "split_mode", "tensor_split")


@pytest.fixture
def warehouse(sqlite_warehouse_url):
    url = sqlite_warehouse_url
    published_history(url, NIGHTS)
    opened = Warehouse(url)
    yield opened
    opened.close()


def _stamps(site: Path) -> dict[str, int]:
    return {str(p.relative_to(site)): p.stat().st_mtime_ns for p in site.rglob("*") if p.is_file()}


def test_the_index_says_in_one_line_whether_the_last_night_regressed_and_what(warehouse, tmp_path):
    publish(warehouse, tmp_path / "site")
    index = (tmp_path / "site" / "index.html").read_text()
    verdict = re.search(r'<p class="verdict paged"[^>]*>(.*?)</p>', index, re.S)
    assert verdict, index[:2000]
    line = re.sub(r"<[^>]+>", "", verdict.group(1))
    assert f"night {night_of(NIGHTS - 1)}" in line and "Paged: 1 regression(s) tonight" in line
    assert f"{REGRESSED}: GPU model +310.00 MiB" in line
    assert "release 0.3.33" in index  # the open incident's culprit


def test_every_page_links_only_files_of_the_site(warehouse, tmp_path):
    site = tmp_path / "site"
    publish(warehouse, site)
    pages = list(site.rglob("*.html"))
    assert {"index.html", "configs.html", "builds.html", "incidents.html", "fits.html", "downloads.html"} <= {
        str(p.relative_to(site)) for p in pages}
    for page in pages:
        text = page.read_text()
        assert "<script" not in text and "http://" not in text.replace("https://pypi.org", "")
        for link in re.findall(r'(?:href|src)="([^"#]*)(?:#[^"]*)?"', text):
            if link.startswith("https://"):  # a culprit's link, shown as text only
                raise AssertionError(f"{page}: links off the site: {link}")
            if link:
                assert (page.parent / link).resolve().is_file(), f"{page.relative_to(site)} -> {link}"


def test_every_point_names_a_command_that_the_bench_command_line_takes(warehouse, tmp_path):
    site = tmp_path / "site"
    publish(warehouse, site)
    page = (site / "configs").glob("deepseek-moe-16b_Q4_K_M_baseline_*.html").__next__().read_text()
    anchors = set(re.findall(r'<pre class="command" id="(r\d+)">', page))
    linked = re.findall(r'href="#(r\d+)"', page)
    assert linked and set(linked) <= anchors  # each run's row and each build's row names a command on the page
    assert len(re.findall(r"<tr id=\"run-", page)) == NIGHTS
    row = flatten(next(r for r in night() if r.config.config_name == REGRESSED))
    assert row["file_sha256"] in page and NEW_BUILD in page
    for command in re.findall(r"\n(vramwatch bench [^\n<]+)", page):
        args = build_parser().parse_args(shlex.split(command)[1:])
        knobs = {name: getattr(args, name) for name in ("n_prompt", "n_gen", "n_ctx", "n_batch", "n_ubatch",
                                                        "type_k", "type_v", "use_mmap", "reps")}
        assert knobs == {name: row[name] for name in knobs}
        assert args.mode == "baseline" and args.python == "ENGINE/bin/python"


def test_the_bench_command_has_a_flag_for_every_knob():
    command = bench_command({**flatten(night()[0]), "n_threads": 8, "use_mmap": False})
    assert "--n-threads 8" in command and "--no-use-mmap" in command and "--generation" in command
    limits = {"timeout_s", "host_memory_limit_mib"}  # no figure depends on them: the row has no column
    for name in BenchKnobs.__dataclass_fields__.keys() - limits:
        assert f"-{name.replace('_', '-')}" in command, name


def test_a_two_gpu_rows_command_names_its_split_and_parses_back_to_it(tmp_path):
    """Issue 29: the split knobs are flat-row columns, so the site's command for a two-GPU row measures that split
    again, and its one-GPU twin's says one GPU (its empty tensor_split quoted for the shell)."""
    split = two_gpu_result("phi-3.5-moe-Q8_0-2gpu-row", split_mode="row", tensor_split="3,1")
    one_gpu = result("phi-3.5-moe", "Q8_0")
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    with closing(Warehouse(url)) as warehouse:
        warehouse.store_run("run000", night_of(0), build_record(NEW_BUILD),
                            ValidatedNight(accepted=[one_gpu, split], quarantined=[]), "test")
        publish(warehouse, tmp_path / "site")
    for row, expected in ((split, (2, "row", "3,1")), (one_gpu, (1, "layer", ""))):
        page = (tmp_path / "site" / "configs" / f"{slug(row.config.config_id)}.html").read_text()
        (command,) = set(re.findall(r"\n(vramwatch bench [^\n<]+)", page))
        args = build_parser().parse_args(shlex.split(html.unescape(command))[1:])
        assert (args.gpus, args.split_mode, args.tensor_split) == expected, command
        assert args.mode == "baseline" and args.n_ctx == row.config.n_ctx


def test_a_split_fits_on_n_cards_of_a_size_when_its_fullest_card_does(tmp_path):
    """Issue 29: Phi-3.5-MoE Q8_0 needs 42.7 GiB on one GPU; split by layer over two, its fuller card needs 22.8 GiB,
    so it fits on 2 x 24 GiB (the flat row's summed need, 43.3 GiB, does not fit one such card). A row split without
    NVML on each card has no per-card need to judge."""
    layer = two_gpu_result("phi-3.5-moe-Q8_0-2gpu-layer")
    row_split = two_gpu_result("phi-3.5-moe-Q8_0-2gpu-row", split_mode="row", tensor_split="3,1")
    row_split = replace(row_split, memory__nvml_process_by_device_mib={}, memory__nvml_process_mib=None)
    one_gpu = result("phi-3.5-moe", "Q8_0")
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    with closing(Warehouse(url)) as warehouse:
        warehouse.store_run("run000", night_of(0), build_record(NEW_BUILD),
                            ValidatedNight(accepted=[one_gpu, layer, row_split], quarantined=[]), "test")
        publish(warehouse, tmp_path / "site")
    page = (tmp_path / "site" / "fits.html").read_text()
    cells = {html.unescape(mode): [html.unescape(cell) for cell in re.findall(r"<td[^>]*>([^<]*)</td>", row)]
             for mode, row in re.findall(r'<td class="text">(baseline[^<]*)</td>(.*?)</tr>', page, re.DOTALL)}
    at_24 = 2 + GPU_SIZES_GIB.index(24)  # after the context and the need

    assert cells["baseline"][at_24] == "does not fit"
    assert cells["baseline on 2 GPUs (layer)"][1] == f"{layer.memory.needed_card_mib:.2f}"
    assert cells["baseline on 2 GPUs (layer)"][at_24] == "fits on 2 x 24 GiB"
    assert cells["baseline on 2 GPUs (layer)"][at_24 - 1] == "does not fit on 2 x 16 GiB"
    assert cells["baseline on 2 GPUs (row)"][at_24] == "per card not known (row split, no NVML)"


def test_a_site_published_before_the_split_knobs_is_made_again_with_them(warehouse, tmp_path):
    """A site the previous version published (manifest version 1: build figures and bench commands without the split
    knobs) is made again whole: a page's key names its inputs, which did not change, not the code that drew it."""
    site = tmp_path / "site"
    publish(warehouse, site)
    manifest = json.loads((site / MANIFEST).read_text())
    for path, entry in manifest["files"].items():  # each file as version 1 wrote it, and its hash in the manifest
        if path.endswith(".html"):
            text = re.sub(r" --gpus \S+ --split-mode \S+ --tensor-split \S+", "", (site / path).read_text())
        elif path.startswith("data/builds/"):
            text = json.dumps([{name: value for name, value in row.items() if name not in SPLIT_KNOBS}
                               for row in json.loads((site / path).read_text())])
        else:
            continue
        (site / path).write_text(text)
        entry["sha256"] = hashlib.sha256(text.encode()).hexdigest()
    (site / MANIFEST).write_text(json.dumps({**manifest, "version": 1}))

    publish(warehouse, site)
    commands = [html.unescape(command) for page in site.rglob("*.html")
                for command in re.findall(r"\n(vramwatch bench [^\n<]+)", page.read_text())]
    assert commands and all(" --gpus 1 --split-mode layer --tensor-split '' " in command for command in commands)


def test_downloads_hold_each_night_as_ingest_reads_it_and_the_history_as_csv_and_json(warehouse, tmp_path):
    site = tmp_path / "site"
    publish(warehouse, site)
    run_id = f"scheduled__{night_of(3)}"
    with gzip.open(site / "data" / "nights" / night_of(3) / f"{run_id}.json.gz", "rt") as document:
        measured = MeasuredNight.from_json(document.read())
    assert measured.results == warehouse.results_for_run(run_id)
    assert measured.build.llama_cpp_commit == warehouse.run(run_id).llama_cpp_commit
    with gzip.open(site / "data" / "history" / "2026-01.csv.gz", "rt") as text:
        rows = list(csv.DictReader(io.StringIO(text.read())))
    assert len(rows) == NIGHTS * len(night()) and set(FIELD_NAMES) <= set(rows[0])
    assert json.loads(rows[0]["buffers_mib"]) == night()[0].memory.buffers_mib
    with gzip.open(site / "data" / "history" / "2026-01.json.gz", "rt") as text:
        assert len(json.load(text)) == len(rows)
    assert 'href="data/history/2026-01.csv.gz"' in (site / "downloads.html").read_text()


def test_publishing_again_writes_nothing_and_a_new_night_rewrites_only_what_it_changes(warehouse, tmp_path):
    site = tmp_path / "site"
    first = publish(warehouse, site)
    assert first.written == first.files  # the manifest besides
    before = _stamps(site)
    again = publish(warehouse, site)
    assert again.written == 0 and _stamps(site) == {**before, MANIFEST: _stamps(site)[MANIFEST]}

    warehouse.store_run(f"scheduled__{night_of(NIGHTS)}", night_of(NIGHTS), build_record(NEW_BUILD),
                        ValidatedNight(accepted=night(), quarantined=[]), "scheduled")
    grown = publish(warehouse, site)
    after = _stamps(site)
    rewritten = {path for path in after if before.get(path) != after[path]} - {MANIFEST}
    assert f"data/nights/{night_of(NIGHTS)}/scheduled__{night_of(NIGHTS)}.json.gz" in rewritten
    assert not any(path.startswith(f"data/nights/{night_of(0)}") for path in rewritten)
    assert "builds/1.html" not in rewritten and "data/builds/1.json" not in rewritten  # an older build: kept
    assert {"index.html", "downloads.html"} <= rewritten
    assert grown.kept >= NIGHTS  # every earlier night's file, at least
    assert grown.written == len(rewritten)


def test_a_file_the_site_no_longer_makes_is_removed(warehouse, tmp_path):
    site = tmp_path / "site"
    publish(warehouse, site)
    manifest = json.loads((site / MANIFEST).read_text())
    (site / "configs" / "gone.html").write_text("an old page")
    manifest["files"]["configs/gone.html"] = {"key": "x", "sha256": "x", "bytes": 11}
    (site / MANIFEST).write_text(json.dumps(manifest))
    assert publish(warehouse, site).removed == 1 and not (site / "configs" / "gone.html").exists()


def test_a_night_stored_again_with_other_figures_is_published_again(warehouse, tmp_path):
    site = tmp_path / "site"
    publish(warehouse, site)
    run_id = f"scheduled__{night_of(4)}"
    results = warehouse.results_for_run(run_id)
    grown = [replace(r, memory__gpu_compute_mib=r.memory.gpu_compute_mib + 1.0) for r in results]
    warehouse.store_run(run_id, night_of(4), build_record("5e2d8a441"), ValidatedNight(accepted=grown, quarantined=[]),
                        "scheduled")
    before = _stamps(site)
    publish(warehouse, site)
    with gzip.open(site / "data" / "nights" / night_of(4) / f"{run_id}.json.gz", "rt") as document:
        assert MeasuredNight.from_json(document.read()).results == warehouse.results_for_run(run_id)
    config = next((site / "configs").glob("deepseek-moe-16b_Q4_K_M_baseline_*.html"))
    assert _stamps(site)[str(config.relative_to(site))] != before[str(config.relative_to(site))]
