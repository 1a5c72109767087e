"""The Airflow side of alerting, for the DAG only: Airflow is imported lazily, inside these functions, so the library
(and its tests) never need it.

- `notify_dag_failure(context)`: an on_failure_callback that sends the failure through the library's own channels
  (VRAMWATCH_ALERT_*), so a failed night alerts exactly where regressions do.
- `notifiers(...)`: the providers' SlackWebhookNotifier / SmtpNotifier, for teams that keep their Slack webhook and
  SMTP server as Airflow connections; pass them as on_failure_callback=[...].
"""

from __future__ import annotations

from typing import Any

from vramwatch.alerts.delivery import AlertChannels, deliver
from vramwatch.alerts.messages import Alert, failure_alert

FAILURE_TEXT = ("vramwatch {{ dag.dag_id }} failed on {{ ds }} at {{ ti.task_id }} (run {{ run_id }}): "
                "{{ exception }}")


def failure_from_context(context: dict[str, Any]) -> Alert:
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    night = str(context.get("ds") or getattr(dag_run, "logical_date", "") or "")[:10]
    return failure_alert(night=night, run_id=str(context.get("run_id") or getattr(dag_run, "run_id", "")),
                         failed=str(getattr(ti, "task_id", "") or "the DAG run"),
                         error=str(context.get("exception") or context.get("reason") or ""),
                         log_url=str(getattr(ti, "log_url", "") or ""))


def notify_dag_failure(context: dict[str, Any]) -> int:
    return deliver(failure_from_context(context), AlertChannels.from_env())


def notifiers(slack_conn_id: str | None = "vramwatch_slack", smtp_conn_id: str | None = "vramwatch_smtp",
              email_to: list[str] | None = None, text: str = FAILURE_TEXT) -> list[Any]:
    """Provider notifiers for the connections given (None skips one); text is a Jinja template over the context."""
    built: list[Any] = []
    if slack_conn_id:
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        built.append(SlackWebhookNotifier(slack_webhook_conn_id=slack_conn_id, text=text))
    if smtp_conn_id and email_to:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        built.append(SmtpNotifier(to=email_to, smtp_conn_id=smtp_conn_id, subject="vramwatch nightly failed",
                                  html_content=text))
    return built
