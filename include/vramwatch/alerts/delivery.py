"""Alert delivery without Airflow: a JSON webhook (HTTP POST), SMTP e-mail and a Slack incoming webhook.

Channels come from the environment (AlertChannels.from_env). Every configured channel is tried even when one fails;
the failures are then raised together, so the alert task fails (and retries) instead of losing a page quietly. A
DeliveryLog remembers which channels took an alert, so the retry pages only the ones that failed.

A webhook URL is a secret (a Slack URL's path is its token), and so is anything before `@` in a host. No message,
exception or repr here holds more of a URL than `redact` shows: scheme://host/….
"""

from __future__ import annotations

import http.client
import json
import os
import smtplib
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vramwatch.alerts.messages import Alert, regression_alert
from vramwatch.errors import UserError
from vramwatch.records import NightSummary

TIMEOUT_S = 15.0
# What a send can raise. ValueError and HTTPException: a URL urllib cannot use (their text quotes the URL).
SEND_ERRORS = (OSError, smtplib.SMTPException, ValueError, http.client.HTTPException)


def redact(url: str) -> str:
    """scheme://host/…: enough to tell channels apart, without the path or query (a token) or a user:password@."""
    try:
        parts = urlsplit(url)
        if parts.scheme and parts.netloc:
            return f"{parts.scheme}://{parts.hostname or ''}/…"
    except ValueError:  # e.g. an unclosed [IPv6 bracket
        pass
    # No scheme: urlsplit reads "host:port/..." or "user:pass@host/..." as a scheme, so cut the text by hand.
    return url.split("/", 1)[0].rpartition("@")[2] + "/…"


def _reason(exc: BaseException) -> str:
    """Why a send failed, without the exception's text: that may quote the URL or the SMTP server's reply."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    return getattr(exc, "strerror", None) or type(exc).__name__


class AlertDeliveryError(UserError):
    def __init__(self, failures: list[str]) -> None:
        super().__init__("alert delivery failed: " + "; ".join(failures),
                         "check VRAMWATCH_ALERT_* (webhook URLs, SMTP host:port) and that the receivers are up")


def _webhook_url(variable: str) -> str:
    """The variable's URL, refused at load with a redacted one-line error when urllib could not use it as it is, or
    when it holds a user:password@ (urllib would hand that to the name lookup, and print it in its errors)."""
    url = os.environ.get(variable, "").strip()
    if not url:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed [IPv6 bracket
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"{variable} is not an http(s) URL: {redact(url)}",
                        f"set {variable} to the whole URL, with https:// in front")
    if "@" in parts.netloc:
        raise UserError(f"{variable} holds a user:password@ part: {redact(url)}",
                        "put the token in the URL's path or query as the receiver expects, not before the host")
    return url


@dataclass(frozen=True)
class AlertChannels:
    webhook_url: str = field(default="", repr=False)  # secrets: no repr, so no log or traceback shows them
    smtp_host: str = ""
    smtp_port: int = 25
    email_to: list[str] = field(default_factory=list)
    email_from: str = "vramwatch@localhost"
    slack_webhook_url: str = field(default="", repr=False)
    report_base_url: str = ""  # the UI's page (e.g. https://airflow.example.com/vramwatch): alerts link reports there

    @classmethod
    def from_env(cls) -> AlertChannels:
        """VRAMWATCH_ALERT_WEBHOOK, VRAMWATCH_ALERT_SMTP (host:port), VRAMWATCH_ALERT_EMAIL_TO (comma separated),
        VRAMWATCH_ALERT_EMAIL_FROM, VRAMWATCH_ALERT_SLACK_WEBHOOK; unset ones are off. VRAMWATCH_UI_URL: the base
        URL alerts link the night's report under."""
        smtp = os.environ.get("VRAMWATCH_ALERT_SMTP", "").strip()
        host, _, port = smtp.rpartition(":") if ":" in smtp else (smtp, "", "25")
        if smtp and (not port.isdigit() or "@" in smtp or "/" in smtp):  # never echoed: it may hold user:password@
            raise UserError("VRAMWATCH_ALERT_SMTP is not host:port", "set it like smtp.example.com:25")
        to = [a.strip() for a in os.environ.get("VRAMWATCH_ALERT_EMAIL_TO", "").split(",") if a.strip()]
        if smtp and not to:
            raise UserError("VRAMWATCH_ALERT_SMTP is set but VRAMWATCH_ALERT_EMAIL_TO is empty",
                            "set VRAMWATCH_ALERT_EMAIL_TO to one or more addresses, comma separated")
        return cls(webhook_url=_webhook_url("VRAMWATCH_ALERT_WEBHOOK"), smtp_host=host,
                   smtp_port=int(port), email_to=to,
                   email_from=os.environ.get("VRAMWATCH_ALERT_EMAIL_FROM", cls.email_from),
                   slack_webhook_url=_webhook_url("VRAMWATCH_ALERT_SLACK_WEBHOOK"),
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


@dataclass(frozen=True)
class DeliveryLog:
    """Which channels took which alert (by Alert.key), in a JSON file: a retried alert task re-sends only to the
    channels that failed, and never pages one twice. One file per night, under reports/<night>/."""

    path: Path

    @classmethod
    def for_night(cls, reports_dir: Path, night: str) -> DeliveryLog:
        return cls(reports_dir / night / "alerts_delivered.json")

    def delivered(self, alert: Alert) -> set[str]:
        if not self.path.is_file():
            return set()
        return set(json.loads(self.path.read_text()).get(alert.key, []))

    def record(self, alert: Alert, channel: str) -> None:
        """Add channel to those that took alert. Atomic (temp file, then rename): a killed task leaves the old file
        or the new one, never half of one, so the next try can read it."""
        taken = json.loads(self.path.read_text()) if self.path.is_file() else {}
        taken[alert.key] = sorted({*taken.get(alert.key, []), channel})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=self.path.parent, prefix=f".{self.path.name}.", delete=False) as tmp:
            json.dump(taken, tmp, indent=1)
        os.replace(tmp.name, self.path)


def deliver(alert: Alert, channels: AlertChannels, log: DeliveryLog | None = None) -> int:
    """Send one alert on every configured channel that has not taken it yet (per log, when given; each success is
    recorded at once). Returns how many took it now."""
    sends = []
    if channels.webhook_url:
        sends.append(("webhook", redact(channels.webhook_url), lambda: post_json(channels.webhook_url, alert.payload)))
    if channels.smtp_host:
        sends.append(("e-mail", f"smtp://{channels.smtp_host}:{channels.smtp_port}", lambda: send_email(channels, alert)))
    if channels.slack_webhook_url:
        sends.append(("slack", redact(channels.slack_webhook_url),
                      lambda: post_json(channels.slack_webhook_url, {"text": alert.text})))
    already = log.delivered(alert) if log is not None else set()
    if already:
        print(f"[vramwatch] alert: {', '.join(sorted(already))} took it already: not sent again", file=sys.stderr)
    failures, sent = [], 0
    for name, where, send in sends:
        if name in already:
            continue
        try:
            send()
        except SEND_ERRORS as exc:
            failures.append(f"{name} ({where}): {_reason(exc)}")
            continue
        sent += 1
        if log is not None:
            log.record(alert, name)
    if not sends:
        print("[vramwatch] alert: no channel configured (VRAMWATCH_ALERT_*): not sent", file=sys.stderr)
    if failures:
        raise AlertDeliveryError(failures)
    return sent


def send_alerts(summary: NightSummary, channels: AlertChannels, log: DeliveryLog | None = None) -> int:
    """Page on the night's new incidents (those with `pages`); nothing to page, nothing sent. Returns deliveries."""
    alert = regression_alert(summary, channels.report_base_url)
    return 0 if alert is None else deliver(alert, channels, log)
