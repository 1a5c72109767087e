"""The alert stage: messages built from records, delivered by webhook, e-mail and Slack (no Airflow needed)."""

from vramwatch.alerts.delivery import AlertChannels, AlertDeliveryError, deliver, post_json, send_alerts, send_email
from vramwatch.alerts.messages import Alert, failure_alert, incident_line, regression_alert

__all__ = [
    "Alert",
    "AlertChannels",
    "AlertDeliveryError",
    "deliver",
    "failure_alert",
    "incident_line",
    "post_json",
    "regression_alert",
    "send_alerts",
    "send_email",
]
