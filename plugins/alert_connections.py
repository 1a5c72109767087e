"""The Airflow connections alerts go through, for every DAG that alerts: e-mail (an SMTP connection), the JSON
webhook (an HTTP connection) and Slack (a Slack incoming-webhook connection, sent by the Slack provider's
SlackWebhookNotifier). It lives in plugins/ because every Airflow component puts that folder on sys.path, and only
dags/ and plugins/ import Airflow; it defines no plugin.

Read inside each alerting task, so no secret travels as an XCom, and through Airflow's secrets backend (an
AIRFLOW_CONN_* variable, the metastore, Vault...), which masks each connection's password in the task log. A
webhook's token often sits in its URL's path instead, which Airflow does not mask: that is masked here. A connection
that is not defined leaves its channel to the environment variables (vramwatch.alerts.delivery), as the CLI uses.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

from vramwatch.alerts.delivery import Connections, Poster, SendFailed

# the ids, each replaceable through the environment (a deployment that already names its connections)
SMTP_CONN_ID = os.environ.get("VRAMWATCH_ALERT_SMTP_CONN_ID", "smtp_default")
WEBHOOK_CONN_ID = os.environ.get("VRAMWATCH_ALERT_WEBHOOK_CONN_ID", "vramwatch_webhook")
SLACK_CONN_ID = os.environ.get("VRAMWATCH_ALERT_SLACK_CONN_ID", "vramwatch_slack")


def alert_connections() -> Connections:
    """The alert connections Airflow has; a missing one is None (its channel comes from the environment)."""
    webhook, slack = _connection(WEBHOOK_CONN_ID), _connection(SLACK_CONN_ID)
    if webhook is not None:
        _mask_webhook(webhook)
    return Connections(smtp=_connection(SMTP_CONN_ID), webhook=webhook,
                       slack=_slack_notifier(SLACK_CONN_ID) if slack is not None else None)


def _connection(conn_id: str):
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None


def _mask_webhook(connection) -> None:
    """Mask what of an HTTP connection may be a token besides its password (which Airflow masks): the host when it
    is a whole URL with a path or query, each path segment and query of 8 characters or more (a token; a shorter one
    like /hook is not, and masking it would hide every "hook" in the log), and its extra's values (headers)."""
    from airflow.sdk.log import mask_secret

    host = connection.host or ""
    parts = urlsplit(host if "://" in host else "")  # a bare host name is no secret
    secrets = [*parts.path.split("/"), parts.query, *map(str, (connection.extra_dejson or {}).values())]
    for secret in [host if parts.path.strip("/") or parts.query else "", *secrets]:
        if len(secret) >= 8:
            mask_secret(secret)


def _slack_notifier(conn_id: str) -> Poster:
    """Slack through the provider's SlackWebhookNotifier: it reads the connection (the token in its password, the
    endpoint in its host) through the secrets backend itself."""
    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier
    from airflow.sdk.exceptions import AirflowException, AirflowNotFoundException

    def post(body: dict) -> None:
        # notify() sends the text as it is; calling the notifier (__call__) would render it as a Jinja template
        notifier = SlackWebhookNotifier(slack_webhook_conn_id=conn_id, text=body["text"])
        try:
            notifier.notify({})
        except AirflowNotFoundException:
            raise SendFailed(f"connection {conn_id} has no webhook token (its password)") from None
        except AirflowException as error:  # its text quotes Slack's reply body: say the status only
            status = re.search(r"Status Code: (\d+)", str(error))
            raise SendFailed(f"HTTP {status.group(1)}" if status else type(error).__name__) from None

    return Poster(f"Airflow connection {conn_id}", post)
