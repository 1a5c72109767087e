"""The Airflow connection e-mail alerts go through, for every DAG that alerts. It lives in plugins/ because every
Airflow component puts that folder on sys.path, and only dags/ and plugins/ import Airflow; it defines no plugin.

Read inside each alerting task, so its password never travels as an XCom; vramwatch.pipeline takes it as a plain
object (host, port, login, password, extra_dejson) and reads it the way the SMTP provider does.
"""

from __future__ import annotations

import os

# host, port, TLS and login; an id other than smtp_default through VRAMWATCH_ALERT_SMTP_CONN_ID
SMTP_CONN_ID = os.environ.get("VRAMWATCH_ALERT_SMTP_CONN_ID", "smtp_default")


def smtp_connection():
    """The SMTP connection, if Airflow has one (an AIRFLOW_CONN_* variable, the metastore, a secrets backend); None:
    e-mail comes from the environment."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(SMTP_CONN_ID)
    except AirflowNotFoundException:
        return None
