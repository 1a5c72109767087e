"""llamacpp_bisect's own wiring, run as its tasks run it: the result's alert goes through the Airflow SMTP connection."""

from __future__ import annotations

import json
from pathlib import Path

from support.receivers import SmtpReceiver, serving, stop
from support.samples import bisection

from vramwatch.records import BisectRequest

DAGS = Path(__file__).resolve().parents[2] / "dags"
# the params of a run triggered by hand: no incident, so the result goes to its JSON file and the alert only
REQUEST = BisectRequest("deepseek-moe-16b/Q4_K_M/baseline", "0.3.30", "0.3.36")


def test_the_store_task_alerts_through_the_airflow_smtp_connection(tmp_path, monkeypatch):
    """Fault: the bisection's follow-up alert read SMTP from the environment only, so where the nightly's alerts went
    out through the Airflow connection, the culprit was never e-mailed."""
    from airflow.dag_processing.dagbag import DagBag

    for variable in ("VRAMWATCH_ALERT_WEBHOOK", "VRAMWATCH_ALERT_SMTP", "VRAMWATCH_ALERT_SLACK_WEBHOOK"):
        monkeypatch.delenv(variable, raising=False)
    smtp = serving(SmtpReceiver())
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": smtp.port,
        "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "vramwatch@example.com"}}))
    monkeypatch.setenv("VRAMWATCH_ALERT_EMAIL_TO", "oncall@example.com")
    monkeypatch.setenv("VRAMWATCH_REPORTS_DIR", str(tmp_path / "reports"))
    store = DagBag(dag_folder=str(DAGS / "llamacpp_bisect.py")).dags["llamacpp_bisect"].get_task("store")

    try:
        written = store.python_callable(bisection().to_dict(), REQUEST.to_dict())
    finally:
        stop(smtp)

    assert Path(written).is_file()
    ((recipients, message),) = smtp.messages
    assert recipients == ["oncall@example.com"] and "0.3.33" in message["Subject"] + message.get_content()


def test_the_bisect_dag_is_not_paused_when_it_is_created():
    """Fault: llamacpp_bisect was paused at creation, so every bisection the nightly triggered stayed queued forever."""
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(DAGS / "llamacpp_bisect.py")).dags["llamacpp_bisect"]
    assert dag.is_paused_upon_creation is False


def test_a_bisection_that_names_no_culprit_is_stored_then_fails_its_run_saying_why(tmp_path, monkeypatch):
    """Fault: a bisection that found nothing (a 14-minute compile, then a failed install) was a green run, its reason
    logged at INFO. It is still stored and written, then the task fails with the reason (Airflow logs it at ERROR)."""
    import pytest
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.exceptions import AirflowFailException

    for variable in ("VRAMWATCH_ALERT_WEBHOOK", "VRAMWATCH_ALERT_SMTP", "VRAMWATCH_ALERT_SLACK_WEBHOOK"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_SMTP_DEFAULT", raising=False)
    monkeypatch.setenv("VRAMWATCH_REPORTS_DIR", str(tmp_path / "reports"))
    dag = DagBag(dag_folder=str(DAGS / "llamacpp_bisect.py")).dags["llamacpp_bisect"]
    found_nothing = bisection(found=False).to_dict()

    dag.get_task("store").python_callable(found_nothing, REQUEST.to_dict())
    assert [path.name for path in (tmp_path / "reports" / "bisect").rglob("*.json")]  # stored first
    with pytest.raises(AirflowFailException, match=r"no culprit for deepseek-moe-16b/Q4_K_M/baseline@1f3a9c0e "
                                                   r"between 0\.3\.30 and 0\.3\.36: .*0\.3\.33: build failed"):
        dag.get_task("culprit_named").python_callable(found_nothing)  # then the run's last task turns it red
