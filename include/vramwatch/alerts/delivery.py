"""Alert delivery without Airflow: a JSON webhook (HTTP POST), SMTP e-mail and a Slack incoming webhook.

Channels come from the environment (AlertChannels.from_env). Every configured channel is tried even when one fails;
the failures are then raised together, so the alert task fails (and retries) instead of losing a page quietly.
"""

from __future__ import annotations

import json
import os
import smtplib
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from vramwatch.alerts.messages import Alert, regression_alert
from vramwatch.errors import UserError
from vramwatch.records import NightSummary

TIMEOUT_S = 15.0


class AlertDeliveryError(UserError):
    def __init__(self, failures: list[str]) -> None:
        super().__init__("alert delivery failed: " + "; ".join(failures),
                         "check VRAMWATCH_ALERT_* (webhook URLs, SMTP host:port) and that the receivers are up")


@dataclass(frozen=True)
class AlertChannels:
    webhook_url: str = ""
    smtp_host: str = ""
    smtp_port: int = 25
    email_to: list[str] = field(default_factory=list)
    email_from: str = "vramwatch@localhost"
    slack_webhook_url: str = ""
    report_base_url: str = ""  # the UI's page (e.g. https://airflow.example.com/vramwatch): alerts link reports there

    @classmethod
    def from_env(cls) -> AlertChannels:
        """VRAMWATCH_ALERT_WEBHOOK, VRAMWATCH_ALERT_SMTP (host:port), VRAMWATCH_ALERT_EMAIL_TO (comma separated),
        VRAMWATCH_ALERT_EMAIL_FROM, VRAMWATCH_ALERT_SLACK_WEBHOOK; unset ones are off. VRAMWATCH_UI_URL: the base
        URL alerts link the night's report under."""
        smtp = os.environ.get("VRAMWATCH_ALERT_SMTP", "").strip()
        host, _, port = smtp.rpartition(":") if ":" in smtp else (smtp, "", "25")
        if smtp and not port.isdigit():
            raise UserError(f"VRAMWATCH_ALERT_SMTP={smtp!r} is not host:port", "set it like smtp.example.com:25")
        to = [a.strip() for a in os.environ.get("VRAMWATCH_ALERT_EMAIL_TO", "").split(",") if a.strip()]
        if smtp and not to:
            raise UserError("VRAMWATCH_ALERT_SMTP is set but VRAMWATCH_ALERT_EMAIL_TO is empty",
                            "set VRAMWATCH_ALERT_EMAIL_TO to one or more addresses, comma separated")
        return cls(webhook_url=os.environ.get("VRAMWATCH_ALERT_WEBHOOK", "").strip(), smtp_host=host,
                   smtp_port=int(port), email_to=to,
                   email_from=os.environ.get("VRAMWATCH_ALERT_EMAIL_FROM", cls.email_from),
                   slack_webhook_url=os.environ.get("VRAMWATCH_ALERT_SLACK_WEBHOOK", "").strip(),
                   report_base_url=os.environ.get("VRAMWATCH_UI_URL", "").strip())


def post_json(url: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        response.read()


def send_email(channels: AlertChannels, alert: Alert) -> None:
    message = EmailMessage()
    message["Subject"], message["From"], message["To"] = alert.subject, channels.email_from, ", ".join(
        channels.email_to)
    message.set_content(alert.text)
    with smtplib.SMTP(channels.smtp_host, channels.smtp_port, timeout=TIMEOUT_S) as smtp:
        smtp.send_message(message)


def deliver(alert: Alert, channels: AlertChannels) -> int:
    """Send one alert on every configured channel; returns how many took it."""
    sends = []
    if channels.webhook_url:
        sends.append(("webhook", lambda: post_json(channels.webhook_url, alert.payload)))
    if channels.smtp_host:
        sends.append(("e-mail", lambda: send_email(channels, alert)))
    if channels.slack_webhook_url:
        sends.append(("slack", lambda: post_json(channels.slack_webhook_url, {"text": alert.text})))
    failures = []
    for name, send in sends:
        try:
            send()
        except (OSError, smtplib.SMTPException, urllib.error.URLError) as exc:
            failures.append(f"{name}: {exc}")
    if not sends:
        print("[vramwatch] alert: no channel configured (VRAMWATCH_ALERT_*): not sent", file=sys.stderr)
    if failures:
        raise AlertDeliveryError(failures)
    return len(sends)


def send_alerts(summary: NightSummary, channels: AlertChannels) -> int:
    """Page on the night's new incidents (those with `pages`); nothing to page, nothing sent. Returns deliveries."""
    alert = regression_alert(summary, channels.report_base_url)
    return 0 if alert is None else deliver(alert, channels)
