"""Alert delivery without Airflow: a JSON webhook (HTTP POST), SMTP e-mail and a Slack incoming webhook.

Channels come from the environment (AlertChannels.from_env), or from a deployment's own connections (Connections:
the Airflow ones, which plugins/alert_connections.py reads in the task, so their secrets stay in Airflow's secrets
backend and masked in its task logs); a connection given replaces its channel's environment variables. With no
channel at all, every alert step logs a WARNING: a night that pages no one must not look like one that had nothing
to say. Every configured channel is tried even when one fails;
the failures are then raised together, so the alert task fails (and retries) instead of losing a page quietly. A
DeliveryLog remembers which channels took which incident change, so a retry, or a second run of the night, pages each
channel once per incident change.

A webhook URL is a secret (a Slack URL's path is its token), and so is anything before `@` in a host. No message,
exception or repr here holds more of a URL than `redact` shows: scheme://host/….
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import http.client
import json
import os
import smtplib
import ssl
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from vramwatch.alerts.messages import Alert, regression_alert
from vramwatch.errors import UserError
from vramwatch.progress import for_stage, logger
from vramwatch.records import Incident, NightSummary

TIMEOUT_S = 15.0


class SendFailed(Exception):
    """A send that failed for a reason whose text holds no secret (a deployment's sender says which, e.g. HTTP 500)."""


# What a send can raise. ValueError and HTTPException: a URL urllib cannot use (their text quotes the URL).
SEND_ERRORS = (OSError, smtplib.SMTPException, ValueError, http.client.HTTPException, SendFailed)
NO_CHANNEL = ("no alert channel is configured (VRAMWATCH_ALERT_WEBHOOK, VRAMWATCH_ALERT_SLACK_WEBHOOK, "
              "VRAMWATCH_ALERT_SMTP, or the Airflow connections vramwatch_webhook, vramwatch_slack and "
              "smtp_default): regressions page no one")
_say = for_stage("alerts")
_log = logger("alerts")


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
    if isinstance(exc, SendFailed):
        return str(exc)
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    return getattr(exc, "strerror", None) or type(exc).__name__


class AlertDeliveryError(UserError):
    def __init__(self, failures: list[str]) -> None:
        self.failures = failures
        super().__init__("alert delivery failed: " + "; ".join(failures),
                         "check VRAMWATCH_ALERT_* (webhook URLs, SMTP host:port, TLS, login) or the alert "
                         "connections, and that the receivers are up")


SmtpSecurity = Literal["ssl", "starttls", "none"]
SMTP_SECURITY: tuple[SmtpSecurity, ...] = ("ssl", "starttls", "none")


@dataclass(frozen=True)
class SmtpSettings:
    """Where e-mail alerts go: the server, how the connection is secured (implicit TLS, STARTTLS or none), and the
    login. The certificate is checked against the system's CAs (SSL_CERT_FILE adds one) unless verify is False."""

    host: str
    port: int = 0  # 0: the security's usual port (465 for ssl, 587 for starttls, 25 for none)
    security: SmtpSecurity = "none"
    login: str = ""
    password: str = field(default="", repr=False)  # a secret: no repr, so no log or traceback shows it
    verify: bool = True
    timeout_s: float = TIMEOUT_S
    sender: str = ""  # the From address, when the connection names one

    @property
    def server_port(self) -> int:
        return self.port or {"ssl": 465, "starttls": 587, "none": 25}[self.security]

    @property
    def where(self) -> str:
        """The server as messages name it: no login, no password."""
        return f"smtp://{self.host}:{self.server_port} ({self.security})"

    @classmethod
    def from_connection(cls, connection: Any) -> SmtpSettings:
        """An Airflow SMTP connection (anything with host, port, login, password and extra_dejson), read as the
        Airflow SMTP provider reads it: implicit TLS unless the extra says disable_ssl, then STARTTLS unless it says
        disable_tls; ssl_context "none" skips the certificate check; timeout and from_email as the provider's."""
        extra = connection.extra_dejson or {}
        if not connection.host:
            raise UserError("the SMTP connection has no host", "set the connection's host (and port) to the server")
        security: SmtpSecurity = ("ssl" if not _flag(extra.get("disable_ssl")) else
                                  "starttls" if not _flag(extra.get("disable_tls")) else "none")
        return cls(host=connection.host, port=int(connection.port or 0), security=security,
                   login=connection.login or "", password=connection.password or "",
                   verify=str(extra.get("ssl_context", "default")).lower() != "none",
                   timeout_s=float(extra.get("timeout", TIMEOUT_S)), sender=str(extra.get("from_email") or ""))

    @classmethod
    def from_env(cls) -> SmtpSettings | None:
        """VRAMWATCH_ALERT_SMTP (host:port), VRAMWATCH_ALERT_SMTP_TLS (ssl, starttls or none, the default),
        VRAMWATCH_ALERT_SMTP_USER and VRAMWATCH_ALERT_SMTP_PASSWORD; None when VRAMWATCH_ALERT_SMTP is unset."""
        smtp = os.environ.get("VRAMWATCH_ALERT_SMTP", "").strip()
        if not smtp:
            return None
        host, _, port = smtp.rpartition(":") if ":" in smtp else (smtp, "", "0")
        if not port.isdigit() or "@" in smtp or "/" in smtp:  # never echoed: it may hold user:password@
            raise UserError("VRAMWATCH_ALERT_SMTP is not host:port",
                            "set it like smtp.example.com:587, and the login in VRAMWATCH_ALERT_SMTP_USER/_PASSWORD")
        security = os.environ.get("VRAMWATCH_ALERT_SMTP_TLS", "none").strip().lower()
        if security not in SMTP_SECURITY:
            raise UserError(f"VRAMWATCH_ALERT_SMTP_TLS is {security[:20]!r}",
                            f"set it to one of {', '.join(SMTP_SECURITY)}")
        return cls(host=host, port=int(port), security=security,  # type: ignore[arg-type]
                   login=os.environ.get("VRAMWATCH_ALERT_SMTP_USER", ""),
                   password=os.environ.get("VRAMWATCH_ALERT_SMTP_PASSWORD", ""))


def _flag(value: Any) -> bool:
    """An extra's boolean, which the Airflow UI may store as text."""
    return value is True or str(value).strip().lower() in ("true", "1", "yes", "on")


def _checked_url(url: str, name: str, fix: str) -> str:
    """`url`, refused with a redacted one-line error (naming its setting, `name`) when urllib could not use it as it
    is, or when it holds a user:password@ (urllib would hand that to the name lookup, and print it in its errors)."""
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed [IPv6 bracket
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"{name} is not an http(s) URL: {redact(url)}", fix)
    if "@" in parts.netloc:
        raise UserError(f"{name} holds a user:password@ part: {redact(url)}",
                        "put the token in the URL's path or query as the receiver expects, not before the host")
    return url


def post_json(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        response.read()


@dataclass(frozen=True)
class Poster:
    """One HTTP channel: `where` names its receiver in messages (never a secret), `post` sends it a JSON body (urllib
    here; a deployment may bring its own, as the Airflow Slack provider's notifier in plugins/alert_connections.py)."""

    where: str
    post: Callable[[dict[str, Any]], None] = field(repr=False, compare=False)

    @classmethod
    def to_url(cls, url: str, headers: dict[str, str] | None = None) -> Poster:
        """POSTs to `url` with `headers` (an Authorization, say): both secrets, named in messages as redact shows."""
        return cls(redact(url), functools.partial(post_json, url, headers=dict(headers or {})))

    @classmethod
    def from_env(cls, variable: str) -> Poster | None:
        url = os.environ.get(variable, "").strip()
        return cls.to_url(_checked_url(url, variable, f"set {variable} to the whole URL, with https:// in front")
                          ) if url else None

    @classmethod
    def from_connection(cls, connection: Any) -> Poster:
        """An HTTP connection (conn_type http: host, schema, port, login, password, extra_dejson) read as the Airflow
        HTTP provider's hook reads it: the host as a whole URL when it has a scheme, else schema://host:port; extra's
        `endpoint` appended as the path; login and password as HTTP basic auth; every other key of the extra a
        request header (an Authorization: Bearer ..., say). One difference: an empty schema means https, not http
        (an alert says what regressed, and where the report is)."""
        name = f"the HTTP connection {connection.conn_id}"
        host = (connection.host or "").strip()
        if not host:
            raise UserError(f"{name} has no host", "set its host to the receiver's URL (https://host/path)")
        extra = dict(connection.extra_dejson or {})
        base = host if "://" in host else (f"{connection.schema or 'https'}://{host}"
                                           + (f":{connection.port}" if connection.port else ""))
        endpoint = str(extra.pop("endpoint", "") or "")
        url = base.rstrip("/") + "/" + endpoint.lstrip("/") if endpoint else base
        headers = {str(key): str(value) for key, value in extra.items()}
        if connection.login or connection.password:
            login = f"{connection.login or ''}:{connection.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(login).decode()
        return cls.to_url(_checked_url(url, name, "set its host to the receiver's whole URL, with https:// in "
                                                  "front, or its schema, host and port"), headers)


@dataclass(frozen=True)
class Connections:
    """The alert channels a deployment keeps outside the environment, each replacing its environment variables:
    connection objects for e-mail (an SMTP one) and the JSON webhook (an HTTP one), read here (this module imports no
    Airflow), and Slack as a ready Poster (the Slack provider's notifier). Secrets: no repr."""

    smtp: Any = field(default=None, repr=False)
    webhook: Any = field(default=None, repr=False)
    slack: Poster | None = None


@dataclass(frozen=True)
class AlertChannels:
    webhook: Poster | None = None
    smtp: SmtpSettings | None = None
    email_to: list[str] = field(default_factory=list)
    email_from: str = "vramwatch@localhost"
    slack: Poster | None = None
    report_base_url: str = ""  # the UI's page (e.g. https://airflow.example.com/vramwatch): alerts link reports there

    @classmethod
    def from_env(cls, connections: Connections = Connections()) -> AlertChannels:
        """Each channel from its connection when `connections` has one, else from VRAMWATCH_ALERT_WEBHOOK,
        VRAMWATCH_ALERT_SMTP* (SmtpSettings.from_env) and VRAMWATCH_ALERT_SLACK_WEBHOOK; unset ones are off.
        VRAMWATCH_ALERT_EMAIL_TO (comma separated), VRAMWATCH_ALERT_EMAIL_FROM; VRAMWATCH_UI_URL: the base URL alerts
        link the night's report under."""
        smtp = (SmtpSettings.from_connection(connections.smtp) if connections.smtp is not None
                else SmtpSettings.from_env())
        to = [a.strip() for a in os.environ.get("VRAMWATCH_ALERT_EMAIL_TO", "").split(",") if a.strip()]
        if smtp and not to:
            raise UserError("an SMTP server is set but VRAMWATCH_ALERT_EMAIL_TO is empty",
                            "set VRAMWATCH_ALERT_EMAIL_TO to one or more addresses, comma separated")
        sender = os.environ.get("VRAMWATCH_ALERT_EMAIL_FROM", "") or (smtp.sender if smtp else "") or cls.email_from
        webhook = (Poster.from_connection(connections.webhook) if connections.webhook is not None
                   else Poster.from_env("VRAMWATCH_ALERT_WEBHOOK"))
        return cls(webhook=webhook, smtp=smtp, email_to=to, email_from=sender,
                   slack=connections.slack or Poster.from_env("VRAMWATCH_ALERT_SLACK_WEBHOOK"),
                   report_base_url=os.environ.get("VRAMWATCH_UI_URL", "").strip())

    @property
    def names(self) -> list[str]:
        """The channels that are on, as delivery and the report name them."""
        return [name for name, on in (("webhook", self.webhook), ("e-mail", self.smtp), ("slack", self.slack)) if on]


def slack_text(text: str) -> str:
    """`text` as Slack reads it literally: its control characters escaped, so `<!channel>` or `<https://x|y>` in an
    error string neither pings the channel nor becomes a link (https://api.slack.com/reference/surfaces/formatting)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def send_email(settings: SmtpSettings, sender: str, to: list[str], alert: Alert) -> None:
    message = EmailMessage()
    message["Subject"], message["From"], message["To"] = alert.subject, sender, ", ".join(to)
    message.set_content(alert.text)
    context = ssl.create_default_context()
    if not settings.verify:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    server = (smtplib.SMTP_SSL(settings.host, settings.server_port, timeout=settings.timeout_s, context=context)
              if settings.security == "ssl" else smtplib.SMTP(settings.host, settings.server_port,
                                                              timeout=settings.timeout_s))
    with server:
        if settings.security == "starttls":
            server.starttls(context=context)
        if settings.login:
            server.login(settings.login, settings.password)
        server.send_message(message)


def incident_change(incident_id: int | None, is_new: bool, night: str) -> str | None:
    """What one page is for: an incident opening (once, whichever night's run finds it again) or growing on a night.
    None for an incident never saved (no id to remember it by)."""
    if incident_id is None:
        return None
    return f"incident {incident_id} opened" if is_new else f"incident {incident_id} grew {night}"


@dataclass(frozen=True)
class DeliveryLog:
    """Which channels took what, in a JSON file: a regression alert by each incident change it pages for
    (incident_change), any other alert by its Alert.key. So a retried alert task re-sends only to the channels that
    failed, and a second run of the night (a night measured again) pages no channel twice for one change. It also
    keeps which channels were on when the night's alerts were last sent (CHANNELS_KEY), for the UI's page. One file
    per night, under reports/<night>/ (beside its runs' folders, shared by them)."""

    path: Path
    CHANNELS_KEY = "channels on"  # no key looks like it: Alert.key starts with a run id and ": ", a change "incident"

    @classmethod
    def for_night(cls, reports_dir: Path, night: str) -> DeliveryLog:
        return cls(reports_dir / night / "alerts_delivered.json")

    @staticmethod
    def keys(alert: Alert) -> list[str]:
        """What the alert pages for: its incidents' changes (a regression alert), else the alert itself."""
        payload = alert.payload
        incidents = payload.get("incidents", []) if payload.get("event") == "regression" else []
        changes = [incident_change(i.get("incident_id"), bool(i.get("is_new")), str(payload.get("night", "")))
                   for i in incidents]
        known = [change for change in changes if change is not None]
        return known if known and len(known) == len(changes) else [alert.key]

    def _read(self) -> dict[str, list[str]]:
        return json.loads(self.path.read_text()) if self.path.is_file() else {}

    def delivered(self, alert: Alert) -> set[str]:
        """The channels that took everything the alert pages for."""
        taken = self._read()
        return set.intersection(*(set(taken.get(key, [])) for key in self.keys(alert)))

    def took(self, change: str | None) -> set[str]:
        """The channels that took this incident change."""
        return set(self._read().get(change, [])) if change is not None else set()

    def channels(self) -> list[str] | None:
        """The channels on when the night's alert step last ran; None if it has not run."""
        return self._read().get(self.CHANNELS_KEY)

    def record(self, alert: Alert, channel: str) -> None:
        """Add channel to those that took what the alert pages for."""
        taken = self._read()
        self._write({**taken, **{key: sorted({*taken.get(key, []), channel}) for key in self.keys(alert)}})

    def record_channels(self, names: list[str]) -> None:
        self._write({**self._read(), self.CHANNELS_KEY: sorted(names)})

    def _write(self, content: dict[str, list[str]]) -> None:
        """Atomic (temp file, then rename): a killed task leaves the old file or the new one, never half of one, so
        the next try can read it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=self.path.parent, prefix=f".{self.path.name}.", delete=False) as tmp:
            json.dump(content, tmp, indent=1)
        os.replace(tmp.name, self.path)


def deliver(alert: Alert, channels: AlertChannels, log: DeliveryLog | None = None,
            only: Collection[str] | None = None) -> int:
    """Send one alert on every configured channel (of those named in `only`, when given) that has not taken it yet
    (per log, when given; each success is recorded at once). Returns how many took it now."""
    sends = []
    if channels.webhook:
        webhook = channels.webhook
        sends.append(("webhook", webhook.where, lambda: webhook.post(alert.payload)))
    if channels.smtp:
        smtp = channels.smtp
        sends.append(("e-mail", smtp.where, lambda: send_email(smtp, channels.email_from, channels.email_to, alert)))
    if channels.slack:
        slack = channels.slack
        sends.append(("slack", slack.where, lambda: slack.post({"text": slack_text(alert.text)})))
    already = log.delivered(alert) if log is not None else set()
    if already:
        _say(f"{', '.join(sorted(already))} took it already: not sent again")
    failures, sent = [], 0
    for name, where, send in sends:
        if name in already or (only is not None and name not in only):
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
        _log.warning("%s: %r not sent", NO_CHANNEL, alert.subject)
    if failures:
        raise AlertDeliveryError(failures)
    return sent


def send_alerts(summary: NightSummary, channels: AlertChannels, log: DeliveryLog | None = None) -> int:
    """Page on the night's new incidents (those with `pages`); nothing to page, nothing sent. Returns deliveries.
    With a log, each channel gets only the incident changes it has not taken (one page per change per channel,
    whichever run of the night finds them). With no channel on, it warns even when nothing pages tonight (and the log
    records it for the UI's page)."""
    if log is not None:
        log.record_channels(channels.names)
    paging = [incident for incident in summary.incidents if incident.pages]
    if not paging:
        if not channels.names:
            _log.warning("%s (nothing pages tonight)", NO_CHANNEL)
        return 0
    if log is None or not channels.names:
        return deliver(_alert_for(summary, paging, channels), channels, log)
    pending: dict[tuple[int, ...], tuple[list[Incident], list[str]]] = {}  # by the incidents owed
    for name in channels.names:  # channels owed the same changes get one message together
        owed = [i for i in paging if name not in log.took(incident_change(i.incident_id, i.is_new, summary.night))]
        if owed:
            pending.setdefault(tuple(i.incident_id or 0 for i in owed), (owed, []))[1].append(name)
    if not pending:
        _say(f"{', '.join(channels.names)} took every change tonight pages for already: not sent again")
    sent, failures = 0, []
    for owed, names in pending.values():
        try:
            sent += deliver(_alert_for(summary, owed, channels), channels, log, only=names)
        except AlertDeliveryError as error:
            failures += error.failures
    if failures:
        raise AlertDeliveryError(failures)
    return sent


def _alert_for(summary: NightSummary, incidents: list[Incident], channels: AlertChannels) -> Alert:
    alert = regression_alert(dataclasses.replace(summary, incidents=incidents), channels.report_base_url)
    assert alert is not None  # every incident passed pages
    return alert
