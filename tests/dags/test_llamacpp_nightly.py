"""llamacpp_nightly's own wiring, run as its tasks run it: the alert task pages through Airflow connections."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from support.receivers import HttpReceiver, SmtpReceiver, self_signed_tls, serving, stop

from vramwatch.alerts.delivery import AlertDeliveryError
from vramwatch.records import Incident, NightSummary

DAGS = Path(__file__).resolve().parents[2] / "dags"
PASSWORD = "conn-password-0123"


def paging_night(incident_id: int = 1) -> dict:
    grown = Incident(incident_id=incident_id, kind="vram", metric="gpu_kv_mib", state="open", configs=["m/Q4_K_M/baseline"],
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


SLACK_TOKEN = "T0ABC/B0DEF/slack-token-4567"
WEBHOOK_TOKEN = "webhook-token-89ab"


def test_the_alert_task_pages_slack_through_the_providers_notifier_and_the_webhook_through_an_http_connection(
        tmp_path, monkeypatch):
    """Fault: Slack and the webhook were raw environment URLs, so the secrets backend never held them and Airflow
    never masked them. They are now Airflow connections, defined here as AIRFLOW_CONN_* JSON: a Slack incoming-webhook
    connection that the Slack provider's SlackWebhookNotifier sends through (its token in the password), and an HTTP
    connection for the webhook (a bearer token in a header). Each replaces its environment variable, which points at
    nothing that listens here. A Slack failure says its status, not Slack's reply or the token."""
    from airflow.dag_processing.dagbag import DagBag

    slack, webhook = serving(HttpReceiver()), serving(HttpReceiver())
    monkeypatch.setenv("AIRFLOW_CONN_VRAMWATCH_SLACK", json.dumps({
        "conn_type": "slackwebhook", "host": f"http://127.0.0.1:{slack.server_address[1]}/services",
        "password": SLACK_TOKEN}))
    monkeypatch.setenv("AIRFLOW_CONN_VRAMWATCH_WEBHOOK", json.dumps({
        "conn_type": "http", "host": "127.0.0.1", "port": webhook.server_address[1], "schema": "http",
        "extra": {"endpoint": "vramwatch", "Authorization": f"Bearer {WEBHOOK_TOKEN}"}}))
    monkeypatch.setenv("VRAMWATCH_ALERT_SLACK_WEBHOOK", "http://127.0.0.1:9/nothing-listens")
    monkeypatch.setenv("VRAMWATCH_ALERT_WEBHOOK", "http://127.0.0.1:9/nothing-listens")
    monkeypatch.delenv("AIRFLOW_CONN_SMTP_DEFAULT", raising=False)
    monkeypatch.setenv("VRAMWATCH_REPORTS_DIR", str(tmp_path / "reports"))
    alert = DagBag(dag_folder=str(DAGS / "llamacpp_nightly.py")).dags["llamacpp_nightly"].get_task("alert")

    try:
        assert alert.python_callable(paging_night()) == 2
        slack.failures = 1
        with pytest.raises(AlertDeliveryError) as failed:
            alert.python_callable(paging_night(incident_id=2))  # a new incident: both channels owe it a page
    finally:
        stop(slack, webhook)

    ((slack_path, _), _) = slack.requests
    assert slack_path == f"/services/{SLACK_TOKEN}" and "+64 MiB" in slack.bodies[0]["text"]
    ((webhook_path, headers), _) = webhook.requests
    assert webhook_path == "/vramwatch" and headers["Authorization"] == f"Bearer {WEBHOOK_TOKEN}"
    assert [body["event"] for body in webhook.bodies] == ["regression", "regression"]
    assert failed.value.failures == ["slack (Airflow connection vramwatch_slack): HTTP 500"]


def test_the_alert_task_masks_a_webhook_token_in_the_url_or_a_header_but_no_word_of_the_path(monkeypatch):
    """Airflow masks a connection's password in the task log, not a token in its host's path or in a header. The
    alert task masks those (what Airflow's task log filter redacts), not the path's words: "vramwatch" stays."""
    from airflow.sdk._shared.secrets_masker import redact  # importing Airflow puts plugins/ on sys.path

    path_token, header_token = "p4th-token-0123456789", "h3ader-token-0123456789"
    monkeypatch.setenv("AIRFLOW_CONN_VRAMWATCH_WEBHOOK", json.dumps({
        "conn_type": "http", "host": f"https://alerts.example.com/vramwatch/{path_token}?key=q{path_token}",
        "extra": {"Authorization": f"Bearer {header_token}", "Content-Type": "application/json"}}))
    line = f"posting to https://alerts.example.com/vramwatch/{path_token}?key=q{path_token} with {header_token}"
    assert redact(line) == line  # nothing is masked before a task reads the connection

    from alert_connections import alert_connections  # what every alerting task calls (plugins/ is on sys.path)

    alert_connections()

    assert redact(line) == "posting to https://alerts.example.com/vramwatch/***?key=*** with ***"


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
