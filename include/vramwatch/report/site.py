"""The published site: the warehouse as static pages anyone can browse and reproduce (issue 28).

HTML, one stylesheet and inline SVG; no script, nothing from another host, and every link relative, so it reads the
same from file://, any static host and the Airflow plugin's /site route (served there with the page's
Content-Security-Policy). What it holds:

    index.html            per GPU worker: the latest night's verdict in one line, open incidents and their culprits,
                          what changed recently
    configs.html          every config; configs/<config>.html its history on each machine: every compared figure
                          (VRAM buffers, pp, tg, energy: rows.COMPARED) over the newest HISTORY_RUNS runs with build
                          marks and incidents, and the command that reproduces each point; configs/<config>.builds.html
                          its figures on every earlier build (final: it changes only when a new build comes)
    builds.html           every build; builds/<id>.html that build against the one before it (every consecutive
                          pair). Any two builds: a config's builds page lists them side by side, and the Airflow
                          page compares any pair live; a page per pair would be n^2 pages for a static host
    incidents.html        every incident, its culprit search and each step of it
    fits.html             per config and context: the GPU sizes its measured need fits, on which GPU and build
    downloads.html        data/history/<month>.csv.gz and .json.gz (every flat-row field of every result), and
                          data/nights/<night>/<run>.json.gz: each night as the measured-night JSON `vramwatch ingest`
                          reads

Incremental: manifest.json keeps, per file, a key of the inputs it was made from and its content's hash. A file whose
key is unchanged is not made again; one that is made again is written only when its bytes differ; a file no longer
made is removed. A new night reads and renders its month, its build, the configs and the summary pages, nothing older.

Reads the warehouse only through its methods (the type is imported for checking alone, as dashboard.py does), so the
report stage stays independent of the warehouse stage.
"""

from __future__ import annotations

import csv
import dataclasses
import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from markupsafe import Markup, escape

from vramwatch.records import (
    FLASH_ATTN,
    MEASURED_NIGHT_VERSION,
    BenchKnobs,
    BuildRecord,
    Incident,
    NightVerdicts,
    Record,
    config_name,
)
from vramwatch.report.compare import BuildOption, build_option, config_deltas, config_order
from vramwatch.report.history_chart import HISTORY_RUNS, RunPoint, figures_chart
from vramwatch.report.style import CSS as REPORT_CSS
from vramwatch.report.style import TEMPLATES
from vramwatch.report.tables import GPU_SIZES_GIB, NIGHT_STATES, fits_on_cards, top_lines
from vramwatch.rows import BY_NAME, COMPARED, FIELD_NAMES, FIELDS, JSON, MISSING, Field, number

if TYPE_CHECKING:
    import pandas as pd

    from vramwatch.warehouse.store import Warehouse

SITE_TEMPLATES = TEMPLATES / "site"
MANIFEST = "manifest.json"
# What a page shows, by version: a site published by another version is made again whole, once, since a page's key
# names its inputs, not the code that drew it. 2: bench commands carry the split knobs (gpus, split_mode, ...);
# 3: a split fits on N cards of a size when its fullest card does.
MANIFEST_VERSION = 3
STYLESHEET, ICON = "site.css", "favicon.svg"
# What the config pages, build pages and fits read of each result: the compared figures, and what the reproducing
# command and the fits table need (the knobs the flat row keeps, the model file, the GPU memory needed).
KNOB_FIELDS = tuple(f.name for f in dataclasses.fields(BenchKnobs) if f.name in BY_NAME)
SITE_FIELDS = tuple(dict.fromkeys((*(f.name for f in COMPARED), *KNOB_FIELDS, "model", "quant", "mode", "n_cpu_moe",
                                   "file_sha256", "file_bytes", "gen_tokens", "needed_card_mib", "vram_gib")))
JSON_FIELDS = frozenset(f.name for f in FIELDS if f.kind == JSON)
RECENT_CHANGES = 15  # events in the index's feed
# history downloads: the run and its build, then every flat-row field
HISTORY_RUN_COLUMNS = ("night", "run_id", "lane", "build_version", "llama_cpp_python_version", "llama_cpp_commit",
                       "backend", "cmake_args")


@dataclass(frozen=True)
class PublishResult(Record):
    """What a publish did: files in the site, and how many it wrote, found identical, or did not make again."""

    out: str
    files: int
    written: int
    unchanged: int  # made again, same bytes: not written
    kept: int  # inputs unchanged since the last publish: not made again
    removed: int
    bytes: int
    seconds: float

    def line(self) -> str:
        return (f"site {self.out}: {self.files} files ({self.bytes / 2**20:.1f} MiB), {self.written} written, "
                f"{self.unchanged} unchanged, {self.kept} kept, {self.removed} removed in {self.seconds:.1f} s")


# ------------------------------------------------------------------------------------------------ names and keys


def slug(text: str) -> str:
    """A file name for any id (config ids hold '/' and '@', run ids ':' and '+')."""
    return re.sub(r"[^\w.-]", "_", text)


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _gzip(text: str) -> bytes:
    return gzip.compress(text.encode(), compresslevel=1, mtime=0)  # no time stamp: same rows, same bytes; level 1: years of nights in seconds


class _Files:
    """The site's files against its manifest: skip what is fresh, write what differs, remove what is gone."""

    def __init__(self, out: Path) -> None:
        self.out = out
        try:
            manifest = json.loads((out / MANIFEST).read_text())
        except (OSError, ValueError):
            manifest = {}
        self.old: dict[str, dict] = (manifest.get("files", {}) if manifest.get("version") == MANIFEST_VERSION
                                     else {})
        self.new: dict[str, dict] = {}
        self.written = self.unchanged = self.kept = 0

    def fresh(self, path: str, key: str) -> bool:
        """Whether the file made from inputs `key` is there as the last publish wrote it (then it is kept)."""
        entry = self.old.get(path)
        if entry is None or entry["key"] != key or not (self.out / path).is_file():
            return False
        self.new[path] = entry
        self.kept += 1
        return True

    def put(self, path: str, key: str, content: str | bytes) -> None:
        data = content.encode() if isinstance(content, str) else content
        digest = hashlib.sha256(data).hexdigest()
        target = self.out / path
        entry = self.old.get(path)
        if entry is not None and entry["sha256"] == digest and target.is_file():
            self.unchanged += 1
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            partial.write_bytes(data)
            os.replace(partial, target)  # a reader never sees half a page
            self.written += 1
        self.new[path] = {"key": key, "sha256": digest, "bytes": len(data)}

    def make(self, path: str, key: str, render: Callable[[], str | bytes]) -> None:
        if not self.fresh(path, key):
            self.put(path, key, render())

    def finish(self) -> int:
        """Remove the files the last publish made and this one did not; write the manifest. Returns how many went."""
        gone = [path for path in self.old if path not in self.new]
        for path in gone:
            (self.out / path).unlink(missing_ok=True)
        manifest = {"version": MANIFEST_VERSION, "files": dict(sorted(self.new.items()))}
        partial = self.out / (MANIFEST + ".partial")
        partial.write_text(json.dumps(manifest, indent=0))
        os.replace(partial, self.out / MANIFEST)
        return len(gone)


# ------------------------------------------------------------------------------------------------ reproducing


@dataclass(frozen=True)
class Recipe:
    """How to measure one data point again: the engine to build, then the bench with every knob, on the model file
    with this hash."""

    anchor: str
    build: str  # the build in words: version, llama.cpp commit, backend, CMake flags, source
    engine: str  # `vramwatch builds build ...`
    model_file: str  # the model file: name, sha256, size
    bench: str  # `vramwatch bench ...`

    @property
    def text(self) -> str:
        return f"# build: {self.build}\n{self.engine}\n# model file: {self.model_file}\n{self.bench}"


def bench_command(row: Mapping[str, Any]) -> str:
    """`vramwatch bench` as it measured this row: the mode, then one flag per records.BenchKnobs field the flat row
    keeps, spelled as the command's flags are made from that record (cli.common.add_record_flags), each value quoted
    for the shell (one GPU's empty tensor_split is ''). The knobs it does not keep (timeout, host memory limit) change
    no figure."""
    words = ["vramwatch bench", f"{row['model']}.{row['quant']}.gguf", f"--mode {row['mode']}"]
    if row["mode"] == "partial":
        words.append(f"--n-cpu-moe {int(row['n_cpu_moe'])}")
    for knob in dataclasses.fields(BenchKnobs):
        flag = "--" + knob.name.replace("_", "-")
        if knob.name == "generation":  # an optional record: on when the row has its figures
            value: Any = row.get("gen_tokens") is not None and number(row.get("gen_tokens")) is not None
        elif knob.name in row:
            value = row[knob.name]
        else:
            continue
        if knob.name == "flash_attn" and value not in FLASH_ATTN:  # a stored decision of "auto" in llama.cpp's words
            value = "auto"
        if isinstance(value, bool) or knob.type in ("bool", bool) or knob.name == "generation":
            words.append(flag if value else f"--no-{flag[2:]}")
        else:
            shown = int(value) if isinstance(value, float) and value.is_integer() else value
            words.append(f"{flag} {shlex.quote(str(shown))}")
    return " ".join(words)


def build_words(build: BuildRecord) -> str:
    """A build as its reproducing command names it: version, llama.cpp commit, backend, CMake flags, source."""
    request = build.request
    cuda = f", CUDA architectures {request.cuda_architectures}" if request.cuda_architectures else ""
    return (f"llama-cpp-python {build.llama_cpp_python_version or request.version}, llama.cpp "
            f"{build.llama_cpp_commit or 'commit unknown'}, {request.backend} backend, CMake flags "
            f"{request.cmake_args or 'none'}{cuda}, from {request.source}"
            f"{' ' + request.location if request.location else ''}")


def engine_command(build: BuildRecord) -> str:
    """`vramwatch builds build` for the engine a build made (CMAKE_ARGS in front when it had flags)."""
    request = build.request
    command = f"vramwatch builds build --version {request.version} --backend {request.backend}"
    return f"CMAKE_ARGS='{request.cmake_args}' {command}" if request.cmake_args else command


def recipe(anchor: str, row: Mapping[str, Any], build: BuildRecord) -> Recipe:
    size = BY_NAME["file_bytes"].text(row.get("file_bytes")) if number(row.get("file_bytes")) else MISSING
    model_file = f"{row['model']} {row['quant']}, sha256 {row.get('file_sha256') or 'unknown'} ({size})"
    return Recipe(anchor, build_words(build), engine_command(build), model_file,
                  bench_command(row) + " --python ENGINE/bin/python")


# ------------------------------------------------------------------------------------------------ rendering


def _inline(text: str) -> Markup:
    """Markdown's **bold** as <strong>, everything else escaped (the report's verdict lines)."""
    return Markup(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", str(escape(text))))


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader([SITE_TEMPLATES, TEMPLATES]), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["inline"] = _inline
    env.filters["slug"] = slug
    env.filters["config_name"] = config_name
    return env


def _figure_cells(row: Mapping[str, Any], shown: Sequence[Field]) -> Markup:
    """A row's figures as table cells, each in its field's format: made here, not cell by cell in the template (a
    config page has thousands); a row that measured nothing shows MISSING, never a 0. A formatted number needs no
    escaping."""
    if row["status"] != "ok":
        return Markup(f"<td>{MISSING}</td>" * len(shown))
    return Markup("".join(f"<td>{f.number(number(row[f.name]))}</td>" for f in shown))


@dataclass
class _Site:
    """Everything the pages are made of, read once."""

    runs: pd.DataFrame  # Warehouse.run_index()
    builds: pd.DataFrame  # Warehouse.builds_with_results(), newest first
    build_records: dict[int, BuildRecord]
    options: dict[int, BuildOption]
    incidents: list[Incident]
    figures: dict[int, list[dict[str, Any]]]  # build id -> Warehouse.build_figures (SITE_FIELDS), as rows
    figure_keys: dict[int, str]
    build_of_run: dict[str, int]


def _lane_name(lane: str) -> str:
    return f"GPU worker {lane}" if lane else "first GPU worker"


def _headline(verdicts: NightVerdicts | None, run_id: str) -> tuple[str, str, list[str]]:
    """(state, one line, every line under it) of a night: did it regress, and what. The state is one of the
    report's (tables.NIGHT_STATES); the line is the report's first, with its first regressions after it."""
    if verdicts is None:
        return "Not judged", f"Not judged: run {run_id} stored no verdicts (vramwatch regress --apply judges it)", []
    first, *details = top_lines(verdicts)
    state = next((s for s in NIGHT_STATES if first.startswith(f"**{s}")), "Not judged")
    shown = [line for line in details if not line.startswith("Not judged")][:2]
    line = first.replace("**", "") + (f" — {'; '.join(shown)}" if shown else "")
    if len(details) > len(shown):
        line += f" (and {len(details) - len(shown)} more below)"
    return state, line, details


def _recipes(site: _Site, recipes: dict[tuple, Recipe]) -> Callable[[Mapping[str, Any], int], Recipe]:
    """A page's recipe of a row on a build: one per distinct build, knobs and model file, numbered as they come."""

    def recipe_of(row: Mapping[str, Any], build_id: int) -> Recipe:
        identity = (build_id, *(str(row.get(name)) for name in (*KNOB_FIELDS, "file_sha256", "gen_tokens")))
        if identity not in recipes:
            recipes[identity] = recipe(f"r{len(recipes) + 1}", row, site.build_records[build_id])
        return recipes[identity]

    return recipe_of


class SiteBuilder:
    def __init__(self, warehouse: Warehouse, out: Path) -> None:
        self.warehouse = warehouse
        self.out = out
        self.files = _Files(out)
        self.env = _environment()

    def _page(self, path: str, template: str, **context: Any) -> str:
        depth = path.count("/")
        return self.env.get_template(template).render(root="../" * depth, stylesheet="../" * depth + STYLESHEET,
                                                      path=path, **context)

    # -------------------------------------------------------------------------------------------- reading

    def _read(self) -> _Site:
        runs = self.warehouse.run_index()
        builds = self.warehouse.builds_with_results()
        records = self.warehouse.build_records()
        runs["signature"] = runs[["run_id", "night", "lane", "build_id", "status", "started", "ended",
                                  "n_results"]].astype(str).agg("|".join, axis=1)
        figures, keys = {}, {}
        for build_id, mine in runs.groupby("build_id"):
            keys[int(build_id)] = _key("build", *mine["signature"])
        for build_id in (int(b) for b in builds["build_id"]):
            path = f"data/builds/{build_id}.json"
            figures[build_id] = self._build_figures(path, build_id, keys[build_id])
        return _Site(runs=runs, builds=builds, build_records=records,
                     options={int(row["build_id"]): build_option(row) for _, row in builds.iterrows()},
                     incidents=self.warehouse.incidents(), figures=figures, figure_keys=keys,
                     build_of_run={run_id: int(b) for run_id, b in zip(runs["run_id"], runs["build_id"])})

    def _build_figures(self, path: str, build_id: int, key: str) -> list[dict[str, Any]]:
        """One build's figures per config: from the site's own data file while its runs are unchanged, else from the
        warehouse (and written there: a download too)."""
        if self.files.fresh(path, key):
            return json.loads((self.out / path).read_text())
        frame = self.warehouse.build_figures(build_id, [name for name in SITE_FIELDS if name not in (
            "model", "quant", "mode", "n_cpu_moe")])
        text = frame.to_json(orient="records")  # NaN as null: read back, a figure not measured is None
        self.files.put(path, key, text)
        return json.loads(text)

    # -------------------------------------------------------------------------------------------- publishing

    def publish(self) -> PublishResult:
        start = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        site = self._read()
        self.files.put(STYLESHEET, "css", REPORT_CSS + (SITE_TEMPLATES / STYLESHEET).read_text())
        self.files.put(ICON, "icon", (SITE_TEMPLATES / ICON).read_text())  # or browsers ask for a favicon.ico: a 404
        self._downloads(site)
        self._build_pages(site)
        recent = self._config_pages(site)
        self._incidents_page(site)
        self._fits_page(site, recent)
        self._index(site)
        removed = self.files.finish()
        return PublishResult(out=str(self.out), files=len(self.files.new), written=self.files.written,
                             unchanged=self.files.unchanged, kept=self.files.kept, removed=removed,
                             bytes=sum(entry["bytes"] for entry in self.files.new.values()),
                             seconds=round(time.perf_counter() - start, 2))

    # downloads: the history by month, each night's measured-night JSON

    def _downloads(self, site: _Site) -> None:
        runs = site.runs.assign(month=site.runs["night"].str[:7])
        months = []
        for month, mine in runs.groupby("month"):
            key = _key("month", *mine["signature"])
            paths = (f"data/history/{month}.csv.gz", f"data/history/{month}.json.gz")
            nights = {run.run_id: (f"data/nights/{run.night}/{slug(run.run_id)}.json.gz", _key("night", run.signature))
                      for run in mine.itertuples()}
            months.append((month, paths, [(run.night, run.run_id, nights[run.run_id][0]) for run in mine.itertuples()]))
            if all(self.files.fresh(path, key) for path in paths) and all(
                    self.files.fresh(path, night_key) for path, night_key in nights.values()):
                continue
            self._month(site, mine, key, paths, nights)
        self.files.put("downloads.html", "downloads", self._page(
            "downloads.html", "downloads.html.j2", title="Downloads", months=months[::-1],
            builds=[(option, f"data/builds/{build_id}.json") for build_id, option in site.options.items()]))

    def _month(self, site: _Site, runs: pd.DataFrame, key: str, paths: tuple[str, str],
               nights: dict[str, tuple[str, str]]) -> None:
        by_run = {run.run_id: run for run in runs.itertuples()}
        rows: list[dict[str, Any]] = []
        documents: dict[str, list[dict]] = {run_id: [] for run_id in by_run}
        for run_id, flat, result in self.warehouse.stored_results(by_run):
            run = by_run[run_id]
            build = site.build_records[int(run.build_id)]
            rows.append({"night": run.night, "run_id": run_id, "lane": run.lane, "build_version": build.request.version,
                         "llama_cpp_python_version": build.llama_cpp_python_version,
                         "llama_cpp_commit": build.llama_cpp_commit, "backend": build.request.backend,
                         "cmake_args": build.request.cmake_args, **flat})
            documents[run_id].append(result)
        order = {run_id: i for i, run_id in enumerate(by_run)}  # oldest run first, each run's rows in store order
        rows.sort(key=lambda row: order[row["run_id"]])
        for run_id, results in documents.items():
            path, night_key = nights[run_id]
            build = site.build_records[int(by_run[run_id].build_id)]
            measured = {"build": build.to_dict(), "results": results, "stage_seconds": {},
                        "format_version": MEASURED_NIGHT_VERSION}
            self.files.make(path, night_key, lambda: _gzip(json.dumps(measured)))
        import pandas as pd

        columns = [*HISTORY_RUN_COLUMNS, *FIELD_NAMES]
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:  # the JSON fields (buffers, samples) as JSON text in their cell
            writer.writerow([json.dumps(row[c]) if c in JSON_FIELDS and row[c] is not None else
                             "" if row[c] is None else row[c] for c in columns])
        self.files.put(paths[0], key, _gzip(text.getvalue()))
        self.files.put(paths[1], key, _gzip(pd.DataFrame(rows, columns=columns).to_json(orient="records")))

    # build to build: every consecutive pair

    def _build_pages(self, site: _Site) -> None:
        ordered = list(site.options)[::-1]  # oldest first
        pages = []
        for i, build_id in enumerate(ordered):
            before = ordered[i - 1] if i else None
            path = f"builds/{build_id}.html"
            key = _key("pair", site.figure_keys[build_id], before and site.figure_keys[before],
                       site.options[build_id], before and site.options[before])
            pages.append((site.options[build_id], path, before and site.options[before]))
            self.files.make(path, key, lambda b=build_id, a=before: self._pair(site, a, b))
        self.files.put("builds.html", "builds", self._page("builds.html", "builds.html.j2", title="Builds",
                                                            pages=pages[::-1]))

    def _pair(self, site: _Site, before: int | None, build_id: int) -> str:
        this = site.figures[build_id]
        configs = config_deltas(site.figures[before] if before is not None else [], this)
        changed = [c for c in configs if c.changed] if before is not None else []
        record = site.build_records[build_id]
        by_field = [{delta.field.name: delta for delta in config.rows} for config in configs]
        shown = [f for f in COMPARED if any(f.name in deltas for deltas in by_field)]
        cells = dict(zip((id(config) for config in configs), by_field))
        return self._page(f"builds/{build_id}.html", "pair.html.j2", title=f"Build {site.options[build_id].label}",
                          a=site.options.get(before) if before is not None else None, b=site.options[build_id],
                          configs=configs, n_changed=len(changed), shown=shown,
                          cells=lambda config, f: cells[id(config)].get(f.name),
                          build=build_words(record), engine=engine_command(record))

    # per config: history, builds, commands

    def _config_pages(self, site: _Site) -> pd.DataFrame:

        config_ids = sorted({row["config_id"] for rows in site.figures.values() for row in rows})
        recent = self.warehouse.recent_history(config_ids, HISTORY_RUNS, fields=SITE_FIELDS)
        recent = recent[recent["night"].notna()]
        marks: dict[str, dict[str, set[str]]] = {}  # config id -> metric -> nights an incident of it opened
        for incident in site.incidents:
            if incident.kind != "vram_improved":
                for config in incident.configs:
                    marks.setdefault(config, {}).setdefault(incident.metric, set()).add(incident.opened_night)
        by_build: dict[str, list[tuple[int, dict]]] = {}
        for build_id in list(site.options)[::-1]:
            for row in site.figures[build_id]:
                by_build.setdefault(row["config_id"], []).append((build_id, row))
        # each config's rows as plain dicts, oldest first, made once for the whole frame: pandas on each config's
        # slice reads every column through iloc per config (most of a new night's time)
        by_config: dict[str, list[dict[str, Any]]] = {}
        columns = list(recent.columns)
        for values in recent.itertuples(index=False, name=None):  # Python values, as to_dict's, without its 2nd pass
            row = dict(zip(columns, values))
            by_config.setdefault(row["config_id"], []).append(row)
        listing = []
        signature = dict(zip(site.runs["run_id"], site.runs["signature"]))
        newest = next(iter(site.options), None)
        for config_id, rows in by_config.items():
            path = f"configs/{slug(config_id)}.html"
            mine = [i for i in site.incidents if config_id in i.configs]
            # the builds before the newest: their figures are final, so their page changes only with a new build
            earlier = [(b, row) for b, row in by_build.get(config_id, []) if b != newest]
            key = _key("config", [signature[run_id] for run_id in dict.fromkeys(r["run_id"] for r in rows)],
                       [[r["run_id"], r["status"], r["environment_id"]] for r in rows],  # a re-stored night too
                       [i.to_dict() for i in mine])
            last = rows[-1]
            listing.append((config_order(last), config_id, path, last))
            self.files.make(path, key, lambda c=config_id, r=rows, i=mine, e=bool(earlier): self._config(
                site, c, r, i, marks.get(c, {}), e))
            if earlier:
                self.files.make(f"configs/{slug(config_id)}.builds.html",
                                _key("config builds", [(site.figure_keys[b], site.options[b]) for b, _ in earlier]),
                                lambda c=config_id, e=earlier: self._config_builds(site, c, e))
        listing.sort(key=lambda item: (item[0], item[1]))
        models: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
        for _, config_id, path, last in listing:
            models.setdefault(last["model"], []).append((config_id, path, last))
        self.files.put("configs.html", "configs", self._page("configs.html", "configs.html.j2", title="Configs",
                                                              models=models))
        return recent

    def _config(self, site: _Site, config_id: str, rows: list[dict[str, Any]], incidents: list[Incident],
                marked: dict[str, set[str]], has_earlier_builds: bool) -> str:
        recipes: dict[tuple, Recipe] = {}
        recipe_of = _recipes(site, recipes)
        shown = [f for f in COMPARED if any(number(r[f.name]) for r in rows)]
        by_environment: dict[Any, list[dict[str, Any]]] = {}
        for row in rows:
            by_environment.setdefault(row["environment_id"], []).append(row)
        # an incident's metric is a field, or a buffer or test of llama.cpp's words: then every panel shows it
        others = frozenset(n for metric, nights in marked.items() if metric not in BY_NAME for n in nights)
        machines = []
        for environment_id, mine in by_environment.items():
            axis = [RunPoint(r["night"], r["run_id"], r["status"], None,
                             str(r["llama_cpp_commit"] or r["build_version"])[:9]) for r in mine]
            panels = [(f, [number(r[f.name]) if r["status"] == "ok" else None for r in mine],
                       frozenset(marked.get(f.name, ())) | others) for f in shown]
            last = mine[-1]
            where = f"{last['gpu_name']}" if last["gpu_name"] else f"no GPU: {last['cpu_model']}"
            figure = figures_chart(f"{config_name(config_id)} on {where}", axis, panels) if shown else None
            points = [(r, _figure_cells(r, shown), recipe_of(r, site.build_of_run[r["run_id"]])) for r in mine[::-1]]
            machines.append((environment_id, where, figure, points))
        return self._page(f"configs/{slug(config_id)}.html", "config.html.j2", title=config_name(config_id),
                          config_id=config_id, machines=machines, shown=shown, incidents=incidents,
                          recipes=list(recipes.values()), history_runs=HISTORY_RUNS,
                          builds_page=f"{slug(config_id)}.builds.html" if has_earlier_builds else None)

    def _config_builds(self, site: _Site, config_id: str, earlier: list[tuple[int, dict]]) -> str:
        """A config's figures on every build before the newest, newest first: any two of them side by side."""
        recipes: dict[tuple, Recipe] = {}
        recipe_of = _recipes(site, recipes)
        shown = [f for f in COMPARED if any(number(row.get(f.name)) for _, row in earlier)]
        by_build = [(site.options[b], f"../builds/{b}.html", row, _figure_cells(row, shown), recipe_of(row, b))
                    for b, row in earlier[::-1]]
        return self._page(f"configs/{slug(config_id)}.builds.html", "config_builds.html.j2",
                          title=f"{config_name(config_id)} on every build", config_id=config_id, shown=shown,
                          by_build=by_build, recipes=list(recipes.values()), config_page=f"{slug(config_id)}.html")

    # incidents and bisections

    def _incidents_page(self, site: _Site) -> None:
        self.files.put("incidents.html", "incidents", self._page(
            "incidents.html", "incidents.html.j2", title="Incidents and culprit searches",
            incidents=site.incidents[::-1], known={row["config_id"] for rows in site.figures.values()
                                                   for row in rows}))

    # fits on

    def _fits_page(self, site: _Site, recent: pd.DataFrame) -> None:
        ok = recent[recent["status"] == "ok"]
        newest = ok.drop_duplicates(["config_id", "environment_id"], keep="last")
        rows = []
        for _, row in sorted(newest.iterrows(), key=lambda item: (config_order(item[1]), item[1]["n_ctx"])):
            need = number(row["needed_card_mib"])
            cells = [_fits_cell(row, need, size) for size in GPU_SIZES_GIB]
            rows.append((row, need, cells, f"configs/{slug(row['config_id'])}.html"))
        self.files.put("fits.html", "fits", self._page("fits.html", "fits.html.j2", title="Fits on a GPU of",
                                                        rows=rows, sizes=GPU_SIZES_GIB,
                                                        needed=BY_NAME["needed_card_mib"]))

    # the index: per lane, did the last night regress, and what

    def _index(self, site: _Site) -> None:
        lanes = []
        for lane in self.warehouse.lanes():
            latest = self.warehouse.latest_run(lane=lane)
            if latest is None:
                continue
            state, line, details = _headline(self.warehouse.verdicts(latest.run_id), latest.run_id)
            environments = set(self.warehouse.run_environments(latest.run_id))
            still_open = [i for e in sorted(environments) for i in self.warehouse.open_incidents(e)]
            lanes.append({"name": _lane_name(lane), "run": latest, "state": state, "line": line,
                          "details": details, "incidents": still_open,
                          "build": next((b for b, o in site.options.items()
                                         if site.build_records[b].llama_cpp_commit == latest.llama_cpp_commit), None)})
        events = [(row["first_night"], f"new build {site.options[int(row['build_id'])].label}",
                   f"builds/{int(row['build_id'])}.html") for _, row in site.builds.iterrows()]
        events += [(i.opened_night, f"#{i.incident_id} opened ({i.state}): {i.summary}",
                    f"incidents.html#incident-{i.incident_id}") for i in site.incidents]
        events.sort(key=lambda event: event[0], reverse=True)
        self.files.put("index.html", "index", self._page("index.html", "index.html.j2", title="vramwatch",
                                                          lanes=lanes, events=events[:RECENT_CHANGES],
                                                          n_runs=len(site.runs), n_builds=len(site.options)))


def _fits_cell(row: Mapping[str, Any], need: float | None, size: int) -> tuple[str, str]:
    """(words, css class) of whether a config fits GPUs of `size` GiB, as many as it runs on (fits_on_cards)."""
    words, fits = fits_on_cards(need, int(row["gpus"]), size, number(row["gpu_total_mib"]) is not None)
    return words, "" if fits is None else "fits" if fits else "nofit"


def publish(warehouse: Warehouse, out: Path | str) -> PublishResult:
    """Write (or bring up to date) the static site of the warehouse in `out`. Two publishers of one folder (two GPU
    workers' nightlies) take turns: the lock beside it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also when the process dies
        return SiteBuilder(warehouse, out).publish()

