"""Two builds side by side (the page shows it): per config, every figure builds are compared on (rows.COMPARED:
pp and tg tok/s, each llama.cpp buffer as stored on the GPU and in host RAM), with build A's value, build B's, the
delta and the delta %, each in its field's words and unit.

A config's value on a build is its newest result on that build (its newest ok one, if any), ranked in SQL
(Warehouse.build_figures): one row per config and build, however many nights a build ran. The builds are picked by
id in a plain GET form (the page runs no script); an id the warehouse does not hold is said in one line and the
default pair (the last two builds) is shown instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vramwatch.records import MODES
from vramwatch.rows import COMPARED, Field, number

if TYPE_CHECKING:
    import pandas as pd

    from vramwatch.warehouse.store import Warehouse



@dataclass(frozen=True)
class BuildOption:
    build_id: str  # what the form sends
    label: str


@dataclass(frozen=True)
class Delta:
    """One figure of one config on both builds; a or b is None where that build has no value."""

    field: Field
    a: float | None
    b: float | None

    @property
    def delta(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a

    @property
    def pct(self) -> float | None:
        return None if self.delta is None or not self.a else 100.0 * self.delta / self.a

    @property
    def changed(self) -> bool:
        return self.delta is not None and round(self.delta, 2) != 0


@dataclass(frozen=True)
class ConfigDelta:
    config_name: str
    status_a: str  # "" where the config did not run on that build
    status_b: str
    rows: list[Delta]
    config_id: str = ""

    @property
    def changed(self) -> bool:
        return self.status_a != self.status_b or any(row.changed for row in self.rows)


@dataclass(frozen=True)
class BuildComparison:
    options: list[BuildOption]  # every build with stored results, newest first
    a: BuildOption | None = None
    b: BuildOption | None = None
    configs: list[ConfigDelta] = field(default_factory=list)
    problem: str = ""  # why the asked pair is not what is shown, or why nothing can be compared
    changed_only: bool = False  # show only the configs that changed

    @property
    def n_changed(self) -> int:
        return sum(config.changed for config in self.configs)

    @property
    def shown(self) -> list[ConfigDelta]:
        return [config for config in self.configs if config.changed or not self.changed_only]


def config_order(row: Mapping[str, Any]) -> tuple:
    """Configs as the matrix lists them: model, quant, then baseline, offload, partial by layer count."""
    mode = row["mode"]
    return (row["model"], row["quant"], MODES.index(mode) if mode in MODES else len(MODES), row["n_cpu_moe"])


def build_option(build: pd.Series) -> BuildOption:
    """A row of Warehouse.builds_with_results as the lists name it: commit, version, backend, nights, runs."""
    commit = build["llama_cpp_commit"][:9] or "commit unknown"
    nights = (build["first_night"] if build["first_night"] == build["last_night"]
              else f"{build['first_night']} → {build['last_night']}")
    runs = f"{build['runs']} run{'s' if build['runs'] != 1 else ''}"
    return BuildOption(str(build["build_id"]), f"{commit} · {build['version']} {build['backend']} · {nights} ({runs})")


def _pick(options: list[BuildOption], asked: str | None, default: BuildOption,
          problems: list[str]) -> BuildOption:
    if asked is None or asked == "":
        return default
    found = next((option for option in options if option.build_id == asked), None)
    if found is None:
        problems.append(f"build {asked!r} is not in the warehouse")
        return default
    return found


def config_deltas(a: Iterable[Mapping[str, Any]], b: Iterable[Mapping[str, Any]]) -> list[ConfigDelta]:
    """Per config, each compared figure on build A and build B: the rows of Warehouse.build_figures of each, as
    dicts (the site compares every consecutive pair of years of builds)."""
    by_a, by_b = ({row["config_id"]: row for row in rows} for rows in (a, b))
    rows = {**by_a, **by_b}
    configs = []
    for config_id in sorted(rows, key=lambda config_id: (config_order(rows[config_id]), config_id)):
        sides = [by_a.get(config_id), by_b.get(config_id)]
        # a result that measured nothing (oom, crashed) stores zeros: it has no figures, never a zero
        values = [[number(side[f.name]) if side is not None and side["status"] == "ok" else None for side in sides]
                  for f in COMPARED]
        configs.append(ConfigDelta(
            config_name=rows[config_id]["config_name"],
            status_a="" if sides[0] is None else sides[0]["status"],
            status_b="" if sides[1] is None else sides[1]["status"],
            rows=[Delta(f, va, vb) for f, (va, vb) in zip(COMPARED, values)
                  if {va, vb} - {None, 0.0}],  # a buffer empty or absent on both builds says nothing
            config_id=config_id))
    return configs


def compare_builds(warehouse: Warehouse, asked_a: str | None = None, asked_b: str | None = None,
                   changed_only: bool = False) -> BuildComparison:
    """Builds asked_a and asked_b (ids; None or unknown: the second newest and the newest) compared per config."""
    options = [build_option(build) for _, build in warehouse.builds_with_results().iterrows()]
    if len(options) < 2:
        return BuildComparison(options=options, problem="only one build has stored results: a comparison needs two")
    problems: list[str] = []
    a, b = _pick(options, asked_a, options[1], problems), _pick(options, asked_b, options[0], problems)
    columns = [f.name for f in COMPARED]
    configs = config_deltas(*(warehouse.build_figures(int(side.build_id), columns).to_dict("records")
                              for side in (a, b)))
    problem = (f"{'; '.join(problems)}: pick builds from the lists (showing the default pair instead)"
               if problems else "")
    return BuildComparison(options=options, a=a, b=b, configs=configs, problem=problem, changed_only=changed_only)
