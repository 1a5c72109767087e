"""`vramwatch regress`: tonight's incidents of a stored run, and accepting an intended change."""

from __future__ import annotations

from support.samples import night, replace
from support.warehouses import night_of, store_nights

from vramwatch.cli.main import main
from vramwatch.regress.detect import detect_for_run

CONFIGS = night()
GROWN = "phi-3.5-moe/Q2_K/offload"


def _grown() -> list:
    return [replace(r, memory__gpu_kv_mib=r.memory.gpu_kv_mib + 128) if r.config.config_name == GROWN else r
            for r in CONFIGS]


def test_accepting_an_incident_stops_it_paging(warehouse, capsys):
    store_nights(warehouse, [CONFIGS, _grown()])
    (opened,) = detect_for_run(warehouse, "run001").incidents

    assert main(["regress", "--accept", str(opened.incident_id)]) == 0
    assert f"#{opened.incident_id} accepted: vram gpu_kv_mib on {GROWN}" in capsys.readouterr().out
    assert warehouse.open_incidents() == []
    store_nights(warehouse, [_grown(), _grown()], first=2)
    assert detect_for_run(warehouse, "run002").incidents == []
    assert detect_for_run(warehouse, "run003").incidents == []
    assert main(["regress", "--accept", str(opened.incident_id)]) == 2
    assert f"incident {opened.incident_id} is already accepted" in capsys.readouterr().err


def test_it_prints_tonights_incidents_and_stores_them_only_when_told(warehouse, capsys):
    """Fault: run after the DAG, `vramwatch regress` with no flags wrote: it resolved an open incident."""
    store_nights(warehouse, [CONFIGS, _grown()])

    assert main(["regress"]) == 0
    out = capsys.readouterr().out
    assert f"NEW [open] vram since {night_of(1)}" in out and GROWN in out and "+128.00 MiB" in out
    assert "nothing stored" in out and warehouse.open_incidents() == []

    assert main(["regress", "--run", "run000"]) == 0
    assert "0 open incident(s)" in capsys.readouterr().out
    assert main(["regress", "--night", night_of(1), "--apply"]) == 0
    assert "run run001:" in capsys.readouterr().out and len(warehouse.open_incidents()) == 1


def test_a_run_it_does_not_have_is_one_line_and_a_fix(warehouse, capsys):
    assert main(["regress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the warehouse holds no results for any run") and "fix:" in err
    assert main(["regress", "--run", "nope"]) == 2
    assert "run 'nope' is not in the warehouse" in capsys.readouterr().err
