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
