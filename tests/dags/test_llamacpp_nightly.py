"""llamacpp_nightly's own wiring, run as its tasks run it: the alert task reads SMTP from an Airflow connection."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from support.receivers import SmtpReceiver, self_signed_tls, serving, stop

from vramwatch.records import Incident, NightSummary

DAGS = Path(__file__).resolve().parents[2] / "dags"
PASSWORD = "conn-password-0123"


def paging_night() -> dict:
    grown = Incident(incident_id=1, kind="vram", metric="gpu_kv_mib", state="open", configs=["m/Q4_K_M/baseline"],
                     summary="VRAM gpu_kv_mib +64 MiB", delta_mib=64.0, delta_pct=6.0, build_before="b1",
                     build_after="b2", opened_night="2026-02-10", is_new=True)
    return NightSummary(night="2026-02-10", run_id="scheduled__2026-02-10", report_md="r.md", report_html="r.html",
                        n_results=1, n_quarantined=0, incidents=[grown]).to_dict()


def test_the_alert_task_sends_through_the_airflow_smtp_connection_with_starttls_and_a_login(
        tmp_path, monkeypatch, caplog):
    """Fault: SMTP had no TLS or login and came from an environment variable only. The DAG now reads the connection
    (AIRFLOW_CONN_SMTP_DEFAULT here, as the SMTP provider defines its fields) inside the task, and its password shows
    nowhere: not in the task's return value (its XCom), not in the log."""
    from airflow.dag_processing.dagbag import DagBag

    context, cert_file = self_signed_tls(tmp_path)
    smtp = serving(SmtpReceiver(tls=context, login=("ops", PASSWORD)))
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": smtp.port, "login": "ops", "password": PASSWORD,
        "extra": {"disable_ssl": True, "from_email": "vramwatch@example.com"}}))
    monkeypatch.setenv("VRAMWATCH_ALERT_EMAIL_TO", "oncall@example.com")
    monkeypatch.setenv("VRAMWATCH_REPORTS_DIR", str(tmp_path / "reports"))
    alert = DagBag(dag_folder=str(DAGS / "llamacpp_nightly.py")).dags["llamacpp_nightly"].get_task("alert")

    try:
        with caplog.at_level(logging.DEBUG):
            sent = alert.python_callable(paging_night())
    finally:
        stop(smtp)

    assert sent == 1 and smtp.tls_sessions == 1
    ((recipients, message),) = smtp.messages
    assert recipients == ["oncall@example.com"] and message["From"] == "vramwatch@example.com"
    assert PASSWORD not in caplog.text and PASSWORD not in json.dumps(sent)


def test_without_the_connection_the_alert_task_warns_that_nobody_was_paged(tmp_path, monkeypatch, caplog):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.delenv("AIRFLOW_CONN_SMTP_DEFAULT", raising=False)
    monkeypatch.setenv("VRAMWATCH_REPORTS_DIR", str(tmp_path / "reports"))
    alert = DagBag(dag_folder=str(DAGS / "llamacpp_nightly.py")).dags["llamacpp_nightly"].get_task("alert")

    with caplog.at_level(logging.INFO):
        assert alert.python_callable(paging_night()) == 0

    assert [r.name for r in caplog.records if r.levelno == logging.WARNING] == ["vramwatch.alerts"]


@pytest.fixture(autouse=True)
def _no_alert_environment(monkeypatch):
    for variable in ("VRAMWATCH_ALERT_WEBHOOK", "VRAMWATCH_ALERT_SMTP", "VRAMWATCH_ALERT_SLACK_WEBHOOK"):
        monkeypatch.delenv(variable, raising=False)


def _nightly():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS / "llamacpp_nightly.py")).dags["llamacpp_nightly"]


def test_a_night_that_runs_too_long_fails_before_the_next_is_due_and_pages(monkeypatch, tmp_path):
    """Fault: no dagrun_timeout: a night stuck behind a bisection in the one-slot gpu pool blocked the next night
    (max_active_runs 1) and nobody was paged. The scheduler fails it at the timeout and calls the DAG's failure
    callback with the reason "timed_out": here that callback, with the context the scheduler gives."""
    from datetime import timedelta
    from types import SimpleNamespace

    from support.receivers import HttpReceiver

    dag = _nightly()
    assert timedelta(hours=1) < dag.dagrun_timeout < timedelta(hours=24)  # nights start every 24 h
    hook = serving(HttpReceiver())
    monkeypatch.setenv("VRAMWATCH_ALERT_WEBHOOK", hook.url)
    monkeypatch.delenv("AIRFLOW_CONN_SMTP_DEFAULT", raising=False)
    monkeypatch.setenv("VRAMWATCH_REPORTS_DIR", str(tmp_path / "reports"))
    run = SimpleNamespace(run_id="scheduled__2026-02-10T02:00:00+00:00", logical_date="2026-02-10T02:00:00+00:00")
    callbacks = dag.on_failure_callback if isinstance(dag.on_failure_callback, list) else [dag.on_failure_callback]
    try:
        for callback in callbacks:
            callback({"dag_run": run, "run_id": run.run_id, "reason": "timed_out", "dag": dag})
    finally:
        stop(hook)
    (body,) = hook.bodies
    assert "timed_out" in json.dumps(body) and run.run_id in json.dumps(body)


def test_the_last_task_fails_the_night_naming_each_config_that_was_not_measured():
    """Fault: a night with a failed config was a green run in the DAG list. The last task (after store, report and
    alert) fails with the configs and their reasons; a bench that left no record counts as not measured too."""
    import pytest
    from airflow.sdk.exceptions import AirflowFailException
    from support.samples import result

    last = _nightly().get_task("every_config_measured")
    measured, oom = result(), result(mode="offload", status="oom")
    lost = result(quant="Q8_0")  # its bench task died before it reported
    configs = [r.config.to_dict() for r in (measured, oom, lost)]

    assert last.python_callable(configs[:1], [measured.to_dict()], 1) == 1
    with pytest.raises(AirflowFailException) as failed:
        last.python_callable(configs, [measured.to_dict(), oom.to_dict()], 1)
    assert str(failed.value) == (f"2 of 3 configs not measured: {oom.config.config_name} (oom: CUDA error: out of "
                                 f"memory); {lost.config.config_name} (no result)")
