"""The Airflow connections alerts go through, for every DAG that alerts: e-mail (an SMTP connection), the JSON
webhook (an HTTP connection) and Slack (a Slack incoming-webhook connection, sent by the Slack provider's
SlackWebhookNotifier). It lives in plugins/ because every Airflow component puts that folder on sys.path, and only
dags/ and plugins/ import Airflow; it defines no plugin.

Read inside each alerting task, so no secret travels as an XCom, and through Airflow's secrets backend (an
AIRFLOW_CONN_* variable, the metastore, Vault...), which masks each connection's password in the task log. A
webhook's token often sits in its URL's path or a header instead, which Airflow does not mask: those are masked here.
A connection that is not defined leaves its channel to the environment variables (vramwatch.alerts.delivery), as the
CLI uses.
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
    """Mask what of an HTTP connection may be a token besides its password (which Airflow masks): each token-like
    part of its URL's path and query (the host as a whole URL, the extra's endpoint) and of its headers' values."""
    from airflow.sdk.log import mask_secret

    extra = dict(connection.extra_dejson or {})
    host = connection.host or ""
    url = urlsplit(host if "://" in host else "")  # a bare host name is no secret
    pieces = re.split(r"[/?&=\s]+", " ".join([url.path, url.query, str(extra.pop("endpoint", "")),
                                              *map(str, extra.values())]))
    for piece in pieces:
        if _token_like(piece):
            mask_secret(piece)


def _token_like(text: str) -> bool:
    """A token has letters and digits and some length; a word of a path (/hooks/vramwatch) or a header's value
    (application/json) does not: masking those would hide every "vramwatch" in the task log."""
    return len(text) >= 12 and any(c.isdigit() for c in text) and any(c.isalpha() for c in text)


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
