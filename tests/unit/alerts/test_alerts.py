"""Alerts: messages say what regressed, by how much, where and between which builds; delivery reaches real
receivers on 127.0.0.1 (support.receivers: an HTTP server for the webhook and Slack's format, a small SMTP server
with STARTTLS, implicit TLS and AUTH)."""

from __future__ import annotations

import base64
import dataclasses
import logging

import pytest
from support.receivers import HttpReceiver, SmtpReceiver, serving, stop
from support.samples import bisection

from vramwatch import pipeline
from vramwatch.alerts.delivery import (
    AlertChannels,
    AlertDeliveryError,
    Connections,
    Poster,
    SendFailed,
    SmtpSettings,
    deliver,
    send_alerts,
)
from vramwatch.alerts.messages import bisection_alert, failure_alert, regression_alert
from vramwatch.errors import UserError
from vramwatch.records import Incident, NightSummary


def incident(is_new: bool = True, kind: str = "vram", **changes) -> Incident:
    fields = dict(incident_id=3, kind=kind, metric="gpu_compute_mib", state="open",
                  configs=["phi-3.5-moe/Q2_K/offload", "deepseek-moe-16b/Q2_K/offload"],
                  summary="VRAM gpu_compute_mib +64 MiB / +31.3% on 2 config(s) (offload only)", delta_mib=64.0,
                  delta_pct=31.3, build_before="b5039", build_after="b5040", opened_night="2026-02-10",
                  is_new=is_new, changes=["phi-3.5-moe/Q2_K/offload: CUDA0 compute 204.00 -> 268.00 MiB (+64.00 MiB, +31.4%)",
                                          "deepseek-moe-16b/Q2_K/offload: CUDA0 compute 205.00 -> 269.00 MiB "
                                          "(+64.00 MiB, +31.2%)"])
    return Incident(**{**fields, **changes})


def summary(*incidents: Incident) -> NightSummary:
    return NightSummary(night="2026-02-10", run_id="scheduled__2026-02-10", report_md="/r/2026-02-10/summary.md",
                        report_html="/r/2026-02-10/summary.html", n_results=12, n_quarantined=0,
                        incidents=list(incidents))


# --------------------------------------------------------------------------------------------- receivers


@pytest.fixture
def receivers():
    webhook, slack, smtp = serving(HttpReceiver()), serving(HttpReceiver()), serving(SmtpReceiver())
    channels = AlertChannels(webhook=Poster.to_url(webhook.url), smtp=SmtpSettings("127.0.0.1", smtp.server_address[1]),
                             email_to=["gpu-ops@example.com", "oncall@example.com"], slack=Poster.to_url(slack.url))
    yield channels, webhook, slack, smtp
    stop(webhook, slack, smtp)


# --------------------------------------------------------------------------------------------- messages


def test_a_regression_alert_says_what_how_much_where_and_which_builds():
    alert = regression_alert(summary(incident(), incident(is_new=False, incident_id=1, metric="gpu_kv_mib")))

    assert alert.subject == "vramwatch 2026-02-10: 2 regression(s) on llama.cpp b5040"
    assert alert.text.splitlines()[:2] == [
        "phi-3.5-moe/Q2_K/offload: CUDA0 compute 204.00 -> 268.00 MiB (+64.00 MiB, +31.4%), llama.cpp b5039 -> b5040",
        "deepseek-moe-16b/Q2_K/offload: CUDA0 compute 205.00 -> 269.00 MiB (+64.00 MiB, +31.2%), llama.cpp b5039 -> "
        "b5040"]
    assert "gpu_compute_mib (+64 MiB, +31.3%) on phi-3.5-moe/Q2_K/offload, deepseek-moe-16b/Q2_K/offload" in alert.text
    assert "llama.cpp b5039 -> b5040" in alert.text
    assert "Report: /r/2026-02-10/summary.html" in alert.text
    assert "gpu_kv_mib" not in alert.text  # a known regression is not re-sent
    assert [i["incident_id"] for i in alert.payload["incidents"]] == [3]
    assert alert.payload["report_md"] == "/r/2026-02-10/summary.md"


def test_an_incident_that_grew_pages_again_and_links_the_report_on_the_ui():
    grown = incident(is_new=False, escalated=True, delta_mib=3200.0, changes=["x/Q4_K_M/baseline: CUDA0 model "
                                                                              "+3200.00 MiB"])
    alert = regression_alert(summary(grown), base_url="https://airflow.example.com/vramwatch/")

    assert alert.text.startswith("x/Q4_K_M/baseline: CUDA0 model +3200.00 MiB, llama.cpp b5039 -> b5040")
    assert "(grew tonight)" in alert.text
    assert "Report: https://airflow.example.com/vramwatch/reports/2026-02-10/summary.html" in alert.text
    assert alert.payload["report"] == "https://airflow.example.com/vramwatch/reports/2026-02-10/summary.html"


def test_a_second_gpu_workers_report_is_linked_in_its_own_folder(monkeypatch, tmp_path):
    """Fault: every alert linked reports/<night>/, the first GPU worker's report, whichever worker's night it was."""
    monkeypatch.setenv("VRAMWATCH_REPORTS_DIR", str(tmp_path))
    lane = dataclasses.replace(summary(incident()), report_html=str(tmp_path / "gpu-1" / "2026-02-10" / "summary.html"))

    alert = regression_alert(lane, base_url="https://airflow.example.com/vramwatch")

    assert alert.payload["report"] == "https://airflow.example.com/vramwatch/reports/gpu-1/2026-02-10/summary.html"


def test_no_paging_incident_no_alert():
    assert regression_alert(summary()) is None
    assert regression_alert(summary(incident(is_new=False), incident(kind="vram_improved", delta_mib=-512.0))) is None


def test_a_bisection_alert_names_the_culprit_with_the_figures_and_the_commit_range_to_search_next(receivers):
    channels, webhook, slack, _ = receivers
    alert = bisection_alert(bisection(), incident_id=3)

    assert alert.subject == "vramwatch: deepseek-moe-16b/Q4_K_M/baseline CUDA0/compute: culprit 0.3.33"
    assert alert.text.splitlines()[:3] == [
        "Bisection of deepseek-moe-16b/Q4_K_M/baseline: CUDA0/compute (236.26 MiB -> 260.39 MiB) changed in release "
        "0.3.33: llama-cpp-python 0.3.33",
        "Culprit: 0.3.33 https://pypi.org/project/llama-cpp-python/0.3.33/",
        f"llama.cpp range to bisect next: {'b' * 12}..{'c' * 12}"]
    assert "5 builds: 40 min build, 3 min bench (5 candidates between 0.3.30 and 0.3.36)" in alert.text
    assert deliver(alert, channels) == 3
    assert webhook.bodies[0]["event"] == "bisection" and webhook.bodies[0]["result"]["culprit"]["ref"] == "0.3.33"


def test_a_bisection_that_stopped_says_where_and_why():
    """Fault: a candidate's build failed next to the change: the alert says the range and the build's error."""
    alert = bisection_alert(bisection(found=False), incident_id=None)

    assert alert.subject.endswith("CUDA0/compute: bisection stopped")
    assert "bisection stopped between 0.3.32 and 0.3.34" in alert.text and "ggml.c:12: error: x" in alert.text
    assert "Culprit:" not in alert.text and alert.text.endswith("For no incident")


def test_a_regression_alert_carries_the_incidents_bisection_once_it_has_one():
    grown = incident(is_new=False, escalated=True, bisection=bisection())
    assert "  Culprit: 0.3.33 https://pypi.org/project/llama-cpp-python/0.3.33/" in regression_alert(summary(grown)).text


# --------------------------------------------------------------------------------------------- delivery


def test_send_alerts_reaches_every_channel(receivers):
    channels, webhook, slack, smtp = receivers

    assert send_alerts(summary(incident()), channels) == 3

    (body,) = webhook.bodies
    assert body["event"] == "regression" and body["incidents"][0]["delta_mib"] == 64.0
    (slack_body,) = slack.bodies
    assert "+64 MiB, +31.3%" in slack_body["text"] and "b5039 -&gt; b5040" in slack_body["text"]  # Slack shows -> (escaped)
    ((recipients, message),) = smtp.messages
    assert recipients == ["gpu-ops@example.com", "oncall@example.com"]
    assert message["Subject"] == "vramwatch 2026-02-10: 2 regression(s) on llama.cpp b5040"
    assert "deepseek-moe-16b/Q2_K/offload" in message.get_content()


def test_nothing_new_sends_nothing(receivers):
    channels, webhook, slack, smtp = receivers

    assert send_alerts(summary(incident(is_new=False)), channels) == 0
    assert (webhook.bodies, slack.bodies, smtp.messages) == ([], [], [])


def test_a_dead_channel_fails_loudly_after_the_others_delivered(receivers):
    channels, webhook, _, smtp = receivers
    dead = AlertChannels(webhook=Poster.to_url(webhook.url), smtp=SmtpSettings("127.0.0.1", smtp.server_address[1]),
                         email_to=["a@example.com"], slack=Poster.to_url("http://127.0.0.1:9/nothing-listens"))

    with pytest.raises(AlertDeliveryError, match="slack"):
        deliver(failure_alert("2026-02-10", "r1", "bench", "boom"), dead)
    assert len(webhook.bodies) == 1 and len(smtp.messages) == 1


def test_channels_from_env(monkeypatch):
    monkeypatch.setenv("VRAMWATCH_ALERT_WEBHOOK", "http://127.0.0.1:1/h")
    monkeypatch.setenv("VRAMWATCH_ALERT_SMTP", "mail.local:2525")
    monkeypatch.setenv("VRAMWATCH_ALERT_EMAIL_TO", "a@x, b@x")
    monkeypatch.setenv("VRAMWATCH_ALERT_SLACK_WEBHOOK", "https://hooks.slack.com/services/T/B/X")

    channels = AlertChannels.from_env()

    assert channels.smtp == SmtpSettings("mail.local", 2525, "none")
    assert channels.email_to == ["a@x", "b@x"]
    assert channels.slack.where == "https://hooks.slack.com/…" and channels.webhook.where == "http://127.0.0.1/…"
    monkeypatch.setenv("VRAMWATCH_ALERT_SMTP", "mail.local:smtp")
    with pytest.raises(Exception, match="host:port"):
        AlertChannels.from_env()


def test_a_failed_night_alerts_through_the_dag_callback(receivers, monkeypatch, tmp_path):
    channels, webhook, _, smtp = receivers
    monkeypatch.setenv("VRAMWATCH_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("VRAMWATCH_ALERT_WEBHOOK", webhook.url)
    monkeypatch.setenv("VRAMWATCH_ALERT_SMTP", f"127.0.0.1:{channels.smtp.port}")
    monkeypatch.setenv("VRAMWATCH_ALERT_EMAIL_TO", "oncall@example.com")

    class TaskInstance:
        task_id, log_url = "build_engine", "http://airflow/log/1"

    context = {"ds": "2026-02-10", "run_id": "scheduled__2026-02-10", "ti": TaskInstance(),
               "exception": RuntimeError("nvcc: command not found")}
    assert pipeline.run_task(pipeline.failure_alert, context) == 2

    (body,) = webhook.bodies
    assert (body["event"], body["failed"], body["error"]) == ("failure", "build_engine", "nvcc: command not found")
    ((_, message),) = smtp.messages
    assert message["Subject"] == "vramwatch 2026-02-10: nightly failed at build_engine"


# --------------------------------------------------------------------------------------------- secrets and retries

SECRET = "xoxb-0123-SECRET"  # where each malformed setting below holds its token or password


@pytest.mark.parametrize(("variable", "value", "shown"), [
    ("VRAMWATCH_ALERT_SLACK_WEBHOOK", f"hooks.slack.com/services/T0/B0/{SECRET}", "hooks.slack.com/…"),
    ("VRAMWATCH_ALERT_SLACK_WEBHOOK", f"hooks.slack.com:443/services/T0/B0/{SECRET}", "hooks.slack.com:443/…"),
    ("VRAMWATCH_ALERT_WEBHOOK", f"ftp://hooks.example.com/{SECRET}", "ftp://hooks.example.com/…"),
    ("VRAMWATCH_ALERT_WEBHOOK", f"https://[::1/{SECRET}", "https:/…"),
    ("VRAMWATCH_ALERT_WEBHOOK", f"https://ops:{SECRET}@hooks.example.com/hook", "https://hooks.example.com/…"),
    ("VRAMWATCH_ALERT_WEBHOOK", f"ops:{SECRET}@hooks.example.com/hook", "hooks.example.com/…"),
    ("VRAMWATCH_ALERT_SMTP", f"ops:{SECRET}@mail.example.com", "VRAMWATCH_ALERT_SMTP is not host:port"),
], ids=["slack-no-scheme", "slack-no-scheme-port", "not-http", "bad-ipv6", "user-password", "user-no-scheme",
        "smtp-user-password"])
def test_a_malformed_alert_setting_is_refused_at_load_without_its_secret(monkeypatch, variable, value, shown):
    """Faults: a Slack URL without a scheme raised a ValueError whose traceback printed the token (and the failure
    callback posted it on); `user:pass@` in a webhook URL went to a name lookup; the SMTP setting was echoed whole.
    Each is now one line at load, showing scheme://host/… at most."""
    monkeypatch.setenv("VRAMWATCH_ALERT_EMAIL_TO", "oncall@example.com")
    monkeypatch.setenv(variable, value)

    with pytest.raises(UserError) as refused:
        AlertChannels.from_env()

    message = str(refused.value)
    assert SECRET not in message and "\n" not in message
    assert shown in message and variable in message
    assert refused.value.__cause__ is None and refused.value.__context__ is None  # no traceback quoting the value


def test_a_delivery_failure_names_the_channel_and_a_redacted_url_only(receivers):
    """Fault: an undeliverable URL raised urllib's error, which quotes the URL (a Slack URL's path is its token),
    into the task log and the failure callback. Channels built in code skip from_env's checks, so delivery redacts
    too, and the channels' repr (what a log or a traceback's locals show) holds no URL."""
    _, webhook, _, _ = receivers
    channels = AlertChannels(webhook=Poster.to_url(f"hooks.slack.com/services/T0/B0/{SECRET}"),
                             slack=Poster.to_url(f"http://127.0.0.1:9/services/T0/B0/{SECRET}"))

    with pytest.raises(AlertDeliveryError) as failed:
        deliver(failure_alert("2026-02-10", "r1", "bench", "boom"), channels)

    assert str(failed.value).startswith("alert delivery failed: webhook (hooks.slack.com/…): ValueError; "
                                        "slack (http://127.0.0.1/…): Connection refused (fix: ")
    assert SECRET not in str(failed.value) and SECRET not in repr(channels)
    assert failed.value.__context__ is None


def test_a_retried_alert_pages_only_the_channels_that_failed(receivers, monkeypatch, tmp_path):
    """Fault: a webhook returning 500 failed the alert task, and its retry paged Slack (and e-mail) a second time.
    Delivery is now kept per night and channel (reports/<night>/alerts_delivered.json), so the retry, through the
    DAG's alert task, sends to the webhook only; another run of the night that finds the same change pages no one."""
    channels, _, slack, smtp = receivers
    webhook = serving(HttpReceiver(failures=1))
    monkeypatch.setenv("VRAMWATCH_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("VRAMWATCH_ALERT_WEBHOOK", webhook.url)
    monkeypatch.setenv("VRAMWATCH_ALERT_SLACK_WEBHOOK", slack.url)
    monkeypatch.setenv("VRAMWATCH_ALERT_SMTP", f"127.0.0.1:{channels.smtp.port}")
    monkeypatch.setenv("VRAMWATCH_ALERT_EMAIL_TO", "oncall@example.com")
    night = summary(incident()).to_dict()

    try:
        with pytest.raises(AlertDeliveryError, match="webhook"):
            pipeline.run_task(pipeline.alert, night)
        assert (len(slack.bodies), len(smtp.messages), webhook.bodies) == (1, 1, [])

        assert pipeline.run_task(pipeline.alert, night) == 1  # the retry

        assert (len(slack.bodies), len(smtp.messages), len(webhook.bodies)) == (1, 1, 1)
        assert pipeline.run_task(pipeline.alert, night) == 0  # a third try has nobody left to page
        assert len(webhook.bodies) == 1
        rerun = summary(incident()).to_dict() | {"run_id": "manual__2026-02-10"}
        assert pipeline.run_task(pipeline.alert, rerun) == 0  # the same incident change, whichever run of the night finds it
    finally:
        stop(webhook)


# --------------------------------------------------------------------------------------------- SMTP: TLS and login

PASSWORD = "s3cret-smtp-password"


class Connection:
    """What the DAG hands in: an Airflow connection's fields (airflow.sdk's Connection has these attributes)."""

    def __init__(self, host: str, port: int | None, login: str = "", password: str = "", schema: str = "",
                 conn_id: str = "test_conn", **extra) -> None:
        self.host, self.port, self.login, self.password, self.extra_dejson = host, port, login, password, extra
        self.schema, self.conn_id = schema, conn_id


def test_smtp_settings_read_an_airflow_connection_as_the_smtp_provider_does():
    assert SmtpSettings.from_connection(Connection("mail", 0)).security == "ssl"  # the provider's default
    assert SmtpSettings.from_connection(Connection("mail", 0)).server_port == 465
    starttls = SmtpSettings.from_connection(Connection("mail", 587, "ops", PASSWORD, disable_ssl="true",
                                                       from_email="vram@example.com", timeout=5))
    assert (starttls.security, starttls.login, starttls.password, starttls.sender, starttls.timeout_s) == (
        "starttls", "ops", PASSWORD, "vram@example.com", 5.0)
    plain = SmtpSettings.from_connection(Connection("mail", 25, disable_ssl=True, disable_tls=True))
    assert plain.security == "none" and plain.verify
    assert not SmtpSettings.from_connection(Connection("mail", 465, ssl_context="none")).verify
    assert PASSWORD not in repr(starttls) and PASSWORD not in repr(AlertChannels(smtp=starttls))
    with pytest.raises(UserError, match="no host"):
        SmtpSettings.from_connection(Connection("", 25))


@pytest.fixture
def tls(tmp_path, monkeypatch):
    """A self-signed certificate for 127.0.0.1 that this process trusts (SSL_CERT_FILE, as an ops team adds a CA)."""
    from support.receivers import self_signed_tls

    context, cert_file = self_signed_tls(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    return context


def email_alert(settings: SmtpSettings) -> int:
    return deliver(failure_alert("2026-02-10", "r1", "bench", "boom"),
                   AlertChannels(smtp=settings, email_to=["oncall@example.com"]))


@pytest.mark.parametrize("implicit_tls", [False, True], ids=["starttls", "implicit-tls"])
def test_email_goes_out_over_tls_with_a_login(tls, implicit_tls):
    smtp = serving(SmtpReceiver(tls=tls, implicit_tls=implicit_tls, login=("ops", PASSWORD)))
    try:
        security = "ssl" if implicit_tls else "starttls"
        assert email_alert(SmtpSettings("127.0.0.1", smtp.port, security, "ops", PASSWORD)) == 1
    finally:
        stop(smtp)
    ((recipients, message),) = smtp.messages
    assert recipients == ["oncall@example.com"] and message["Subject"].endswith("nightly failed at bench")
    assert smtp.tls_sessions == 1


def test_a_server_that_wants_a_login_gets_none_without_one_and_the_failure_says_so():
    smtp = serving(SmtpReceiver(login=("ops", PASSWORD)))
    try:
        with pytest.raises(AlertDeliveryError, match=r"e-mail \(smtp://127.0.0.1:\d+ \(none\)\): SMTPSenderRefused"):
            email_alert(SmtpSettings("127.0.0.1", smtp.port))
    finally:
        stop(smtp)
    assert smtp.messages == []


def test_a_wrong_smtp_password_is_one_line_without_the_password_or_the_servers_reply(tls, caplog):
    """Fault: SMTP had no login; with one, a refused login must not put the password (which a server may echo in its
    reply, as this one does) into the exception, the task log or the failure alert."""
    smtp = serving(SmtpReceiver(tls=tls, login=("ops", PASSWORD)))
    wrong = "wrong-" + PASSWORD
    try:
        with pytest.raises(AlertDeliveryError) as failed, caplog.at_level(logging.DEBUG):
            email_alert(SmtpSettings("127.0.0.1", smtp.port, "starttls", "ops", wrong))
    finally:
        stop(smtp)
    message = str(failed.value)
    assert message.startswith(f"alert delivery failed: e-mail (smtp://127.0.0.1:{smtp.port} (starttls)): "
                              "SMTPAuthenticationError (fix: ")
    assert "\n" not in message and failed.value.__context__ is None and failed.value.__cause__ is None
    assert wrong not in message and wrong not in caplog.text and smtp.refused_logins == ["ops"]


def test_an_smtp_certificate_nobody_trusts_is_refused_before_the_login(tmp_path):
    """Fault: a server in the middle with its own certificate would get the login; the TLS check refuses it first."""
    from support.receivers import self_signed_tls

    context, _ = self_signed_tls(tmp_path)  # not trusted: SSL_CERT_FILE is not set
    smtp = serving(SmtpReceiver(tls=context, login=("ops", PASSWORD)))
    try:
        with pytest.raises(AlertDeliveryError, match="certificate verify failed"):
            email_alert(SmtpSettings("127.0.0.1", smtp.port, "starttls", "ops", PASSWORD))
    finally:
        stop(smtp)
    assert smtp.refused_logins == [] and smtp.messages == []


def test_smtp_tls_and_login_from_the_environment(monkeypatch):
    monkeypatch.setenv("VRAMWATCH_ALERT_SMTP", "mail.local:587")
    monkeypatch.setenv("VRAMWATCH_ALERT_SMTP_TLS", "starttls")
    monkeypatch.setenv("VRAMWATCH_ALERT_SMTP_USER", "ops")
    monkeypatch.setenv("VRAMWATCH_ALERT_SMTP_PASSWORD", PASSWORD)
    monkeypatch.setenv("VRAMWATCH_ALERT_EMAIL_TO", "oncall@example.com")

    assert AlertChannels.from_env().smtp == SmtpSettings("mail.local", 587, "starttls", "ops", PASSWORD)
    connection = Connection("relay", 465)
    assert AlertChannels.from_env(Connections(smtp=connection)).smtp == SmtpSettings.from_connection(connection)
    monkeypatch.setenv("VRAMWATCH_ALERT_SMTP_TLS", "tls1.3")
    with pytest.raises(UserError, match="VRAMWATCH_ALERT_SMTP_TLS"):
        AlertChannels.from_env()


# --------------------------------------------------------------------------------------------- connections


def test_a_webhook_http_connection_posts_to_its_url_with_its_login_and_headers_instead_of_the_environments():
    """The webhook as an Airflow HTTP connection (its token in the password, a header or the URL's path, where the
    secrets backend keeps it) replaces VRAMWATCH_ALERT_WEBHOOK; read as the HTTP provider's hook reads one."""
    webhook = serving(HttpReceiver())
    port = webhook.server_address[1]
    whole_url = Connection(f"http://127.0.0.1:{port}/hooks/{SECRET}", None, "ops", PASSWORD,
                           **{"X-Api-Key": SECRET})
    by_parts = Connection("127.0.0.1", port, schema="http", endpoint="/incoming")

    try:
        for connection in (whole_url, by_parts):
            channels = AlertChannels.from_env(Connections(webhook=connection))
            assert channels.names == ["webhook"] and channels.webhook.where == "http://127.0.0.1/…"
            deliver(failure_alert("2026-02-10", "r1", "bench", "boom"), channels)
    finally:
        stop(webhook)

    assert [body["event"] for body in webhook.bodies] == ["failure", "failure"]
    (first_path, first_headers), (second_path, second_headers) = webhook.requests
    assert first_path == f"/hooks/{SECRET}" and first_headers["X-Api-Key"] == SECRET
    assert first_headers["Authorization"] == "Basic " + base64.b64encode(f"ops:{PASSWORD}".encode()).decode()
    assert second_path == "/incoming" and "Authorization" not in second_headers
    assert SECRET not in repr(channels) and SECRET not in repr(Connections(webhook=whole_url))


@pytest.mark.parametrize(("host", "refusal"), [
    ("", "has no host"),
    (f"ftp://hooks.example.com/{SECRET}", "is not an http(s) URL: ftp://hooks.example.com/…"),
    (f"https://ops:{SECRET}@hooks.example.com/hook", "holds a user:password@ part"),
], ids=["no-host", "not-http", "user-password"])
def test_an_unusable_webhook_connection_is_one_line_naming_it_without_its_secret(monkeypatch, host, refusal):
    with pytest.raises(UserError) as refused:
        AlertChannels.from_env(Connections(webhook=Connection(host, None, conn_id="vramwatch_webhook")))

    message = str(refused.value)
    assert "the HTTP connection vramwatch_webhook" in message and refusal in message
    assert SECRET not in message and "\n" not in message


def test_a_deployments_own_sender_fails_with_its_reason_and_the_other_channels_still_deliver(receivers):
    """A sender a deployment brings (the Slack provider's notifier at the Airflow edge) says why it failed in words
    that hold no secret (SendFailed); delivery names the channel by where the sender says it goes."""
    channels, webhook, _, smtp = receivers

    def refused(body: dict) -> None:
        raise SendFailed("HTTP 403")

    slack = Poster("Airflow connection vramwatch_slack", refused)
    with pytest.raises(AlertDeliveryError) as failed:
        deliver(failure_alert("2026-02-10", "r1", "bench", "boom"), dataclasses.replace(channels, slack=slack))

    assert failed.value.failures == ["slack (Airflow connection vramwatch_slack): HTTP 403"]
    assert len(webhook.bodies) == 1 and len(smtp.messages) == 1


# --------------------------------------------------------------------------------------------- no channel at all


@pytest.mark.parametrize("pages", [True, False], ids=["regression", "quiet-night"])
def test_no_channel_configured_warns_and_the_night_records_it(monkeypatch, tmp_path, caplog, pages):
    """Fault: with no alert channel configured, the alert task logged "not sent" on stderr and succeeded, so a night
    whose regressions paged no one looked like any other. It now logs a WARNING, even on a night with nothing to
    page, and the night's delivery log records that no channel was on (the UI's page shows it)."""
    monkeypatch.setenv("VRAMWATCH_REPORTS_DIR", str(tmp_path / "reports"))
    night = summary(incident(is_new=pages))

    with caplog.at_level(logging.INFO, logger="vramwatch"):
        assert pipeline.run_task(pipeline.alert, night.to_dict()) == 0

    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.name == "vramwatch.alerts" and "no alert channel is configured" in warning.getMessage()
    assert ("regression(s)" in warning.getMessage()) == pages
    from vramwatch.alerts.delivery import DeliveryLog

    assert DeliveryLog.for_night(tmp_path / "reports", night.night).channels() == []


def test_slack_text_is_escaped_so_an_error_string_pings_no_one(receivers):
    """Fault: Slack got the alert's text as it was, so `<!channel>` in an error string pinged the whole channel and
    `<https://x|y>` became a link. Slack's control characters are escaped; the e-mail and webhook keep the text."""
    channels, webhook, slack, smtp = receivers
    error = "bench failed: <!channel> <https://evil.example|click> a & b"
    deliver(failure_alert("2026-02-10", "scheduled__2026-02-10", "bench", error), channels)
    (slack_body,) = slack.bodies
    assert "&lt;!channel&gt; &lt;https://evil.example|click&gt; a &amp; b" in slack_body["text"]
    assert "<" not in slack_body["text"] and ">" not in slack_body["text"]
    assert webhook.bodies[0]["error"] == error and error in smtp.messages[0][1].get_content()
