"""`vramwatch report`: a night's report written again from the warehouse."""

from __future__ import annotations

from support.samples import night
from support.warehouses import night_of, store_nights

from vramwatch.cli.main import main
from vramwatch.config import Prices, load_matrix


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


def test_the_report_says_first_when_alerts_cannot_page_and_progress_shows_on_the_terminal(
        warehouse, tmp_path, capsys, monkeypatch):
    """Fault: with no alert channel configured (or one that cannot be used), nothing in the night's report said its
    regressions paged no one. Progress, now Python logging at INFO (the Airflow task log's level), still shows on the
    terminal as `[stage] message`."""
    store_nights(warehouse, [night(gpu=False)])
    latest_md, latest_html = tmp_path / "reports" / "latest.md", tmp_path / "reports" / "latest.html"

    assert main(["report"]) == 0
    assert (f"[vramwatch] report: {tmp_path}/reports/{night_of(0)}/run000/summary.md"
            in capsys.readouterr().err.splitlines())
    assert latest_md.read_text().splitlines()[2].startswith(
        "> **Warning:** Alerts are off: no alert channel is configured (VRAMWATCH_ALERT_WEBHOOK, ")
    assert ('<p class="warning" role="alert"><strong>Warning:</strong> Alerts are off: no alert channel is '
            'configured') in latest_html.read_text()

    monkeypatch.setenv("VRAMWATCH_ALERT_SMTP", "mail.local:25")  # a server, but nobody to write to
    assert main(["report"]) == 0
    assert ("> **Warning:** Alerts cannot be sent: an SMTP server is set but VRAMWATCH_ALERT_EMAIL_TO is empty (fix: "
            in latest_md.read_text())

    monkeypatch.setenv("VRAMWATCH_ALERT_EMAIL_TO", "oncall@example.com")
    assert main(["report"]) == 0
    assert "**Warning:**" not in latest_md.read_text() and 'class="warning"' not in latest_html.read_text()


def test_with_the_nights_matrix_the_report_written_again_has_its_cost_sections(warehouse, tmp_path, capsys):
    """Issue 27: `vramwatch report` had no matrix, so a night written again lost its cost per million tokens."""
    store_nights(warehouse, [night()])
    gpu = night()[0].fingerprint.gpu_name
    matrix = tmp_path / "priced.yaml"
    matrix.write_text(load_matrix("demo").model_copy(update={"prices": Prices(gpu_hour={gpu: 2.5}, kwh=0.15)})
                      .model_dump_json())  # YAML is a superset of JSON
    latest = tmp_path / "reports" / "latest.md"

    assert main(["report"]) == 0
    assert "Cost per million tokens" not in latest.read_text()
    assert "matrix demo has no prices: the report has no cost sections (pass --matrix" in capsys.readouterr().out
    assert main(["report", "--matrix", str(matrix)]) == 0
    assert "Cost per million tokens" in latest.read_text() and "Cheapest config that fits" in latest.read_text()
    assert "has no prices" not in capsys.readouterr().out
