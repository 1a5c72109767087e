"""Shared fixtures: the real engine (a CPU build of llama-cpp-python from the wheel cache) and the demo models.

Both are session-scoped and cached on disk (~/.cache/vramwatch, models/), so only the first run on a machine pays
for the ~10 minute compile.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Airflow reads these at import: point it at the repo before any test imports it.
os.environ.setdefault("AIRFLOW_HOME", str(REPO / "airflow_home"))
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO / "plugins"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{REPO}/airflow_home/airflow.db")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


ENGINE_FIXTURES = {"engine_build", "demo_models", "vocab_dir"}
UNIT_TESTS = REPO / "tests" / "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the engine build (directly or through a fixture): the fast loop skips them; and
    every test under tests/unit, so `make test` can run the quick ones (unit, not engine) on every core first."""
    for item in items:
        if ENGINE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.engine)
        if item.path.is_relative_to(UNIT_TESTS):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def _migrated_sqlite(tmp_path_factory) -> Path:
    """A SQLite warehouse at the newest schema, migrated once per test process."""
    from vramwatch.warehouse.store import Warehouse

    path = tmp_path_factory.mktemp("template") / "warehouse.db"
    Warehouse(f"sqlite:///{path}").close()
    return path


@pytest.fixture
def sqlite_warehouse_url(_migrated_sqlite, tmp_path) -> str:
    """An empty SQLite warehouse of this test's own, copied from one already migrated: running the 9 migrations for
    every test cost a tenth of `make test-unit`. Opening it still runs the (no-op) upgrade; the migrations themselves
    are tested from empty databases in tests/unit/warehouse."""
    path = tmp_path / "warehouse.db"
    shutil.copyfile(_migrated_sqlite, path)
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def airflow_sqlite_db(tmp_path_factory) -> Callable[[Path], str]:
    """Gives an Airflow home its own metadata DB (SQLite), copied from one migrated once per test process: `airflow db
    migrate` costs 4 CPU-seconds (13 s on the shared machine) and four Airflow homes of the e2e tests ran it each.
    Call it with the home folder; it returns the SQLAlchemy URL for AIRFLOW__DATABASE__SQL_ALCHEMY_CONN."""
    home = tmp_path_factory.mktemp("airflow-template")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db"}
    migrate = subprocess.run([str(Path(sys.executable).with_name("airflow")), "db", "migrate"], env=env,
                             capture_output=True, text=True, timeout=600)
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]

    def copy_to(airflow_home: Path) -> str:
        airflow_home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(home / "airflow.db", airflow_home / "airflow.db")
        return f"sqlite:///{airflow_home}/airflow.db"

    return copy_to


@pytest.fixture(scope="session")
def engine_build():
    """The demo matrix's engine (CPU here, CUDA on a GPU worker): built once, reused from the cache after."""
    from vramwatch.builds.engine import build_engine
    from vramwatch.config import Paths, load_matrix

    matrix = load_matrix("demo")
    record = build_engine(matrix.build, matrix.build.version, Paths())
    assert record.ok, f"engine build failed: {record.error}\n{record.log_tail}"
    return record


@pytest.fixture(scope="session")
def demo_models(engine_build):
    """The demo matrix's tiny models at every quant, from the model cache."""
    from vramwatch.config import Paths, load_matrix
    from vramwatch.models.prepare import prepare_models

    return prepare_models(load_matrix("demo"), engine_build, Paths())


@pytest.fixture(scope="session")
def vocab_dir(engine_build) -> Path:
    """llama.cpp's real tokenizer GGUFs, from the engine's own source tree."""
    return Path(engine_build.source_dir) / "vendor" / "llama.cpp" / "models"
