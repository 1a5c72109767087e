"""Retake docs/screenshots/: a real distributed night (scripts/airflow_local.py), seen in headless Chromium.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots] [--site]

It starts Airflow as airflow_local.py does, triggers the demo night (one config's model file is missing: its bench
task is red), waits for it, signs Chromium in with a token from the API server, and captures
  airflow-grid.png     the run's grid with the bench tasks named by config, one red
  vram-history.png     the VRAM history page (/vramwatch/) with that night
Chromium resolves no host but 127.0.0.1, so nothing leaves the machine. Every process stops at the end.

--site takes the published site's instead (no Airflow): `vramwatch publish` of a warehouse of twelve nights on three
builds whose last night paged (tests/support/warehouses.py, published_history), read from file://
  site-index.png       the index: the last night's verdict in one line, the open incident and its culprit
  site-config.png      the regressed config's history
  site-build.png       the last build against the one before
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from airflow_local import DAG, REPO, start  # noqa: E402
from support.airflow_cluster import AirflowCluster  # noqa: E402
from support.browser import WINDOW, Browser  # noqa: E402


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


def shoot_site(folder: Path, out: Path) -> None:
    """The published site of published_history's warehouse, from file://."""
    from support.warehouses import REGRESSED, published_history

    from vramwatch.report.site import publish, slug
    from vramwatch.warehouse.store import Warehouse

    url = f"sqlite:///{folder / 'warehouse.db'}"
    incident = published_history(url)
    warehouse = Warehouse(url)
    try:
        site = Path(publish(warehouse, folder / "site").out)
        newest = int(warehouse.builds_with_results()["build_id"].iloc[0])
    finally:
        warehouse.close()
    with Browser(folder / "chromium-profile") as browser:
        browser.call("Emulation.setDeviceMetricsOverride", width=WINDOW[0], height=WINDOW[1], deviceScaleFactor=1,
                     mobile=False)
        for name, page, text in (("site-index.png", "index.html", "Paged"),
                                 ("site-config.png", f"configs/{slug(incident.configs[0])}.html", REGRESSED),
                                 ("site-build.png", f"builds/{newest}.html", "configs changed")):
            browser.open((site / page).as_uri(), text, settle_s=0.5)
            browser.capture(out / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    parser.add_argument("--site", action="store_true", help="the published site's screenshots instead (no Airflow)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="vramwatch-screenshots-"))
    if args.site:
        try:
            shoot_site(folder, args.out)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
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
