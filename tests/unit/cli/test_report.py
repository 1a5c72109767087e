"""`vramwatch report`: a night's report written again from the warehouse."""

from __future__ import annotations

from support.samples import night
from support.warehouses import night_of, store_nights

from vramwatch.cli.main import main


def test_it_writes_the_chosen_nights_report_again(warehouse, tmp_path, capsys):
    store_nights(warehouse, [night(gpu=False)] * 2)

    assert main(["report", "--night", night_of(0)]) == 0
    assert f"report for {night_of(0)} (run run000)" in capsys.readouterr().out
    assert f"**Test Date**: {night_of(0)}" in (tmp_path / "reports" / "latest.md").read_text()
    assert main(["report"]) == 0
    assert f"report for {night_of(1)} (run run001)" in capsys.readouterr().out


def test_a_night_without_results_is_one_line_and_a_fix(warehouse, capsys):
    store_nights(warehouse, [night(gpu=False)])

    assert main(["report", "--night", "2025-12-31"]) == 2
    err = capsys.readouterr().err
    assert "no results for night 2025-12-31" in err and "fix:" in err
