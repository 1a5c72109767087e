"""Alerts: messages say what regressed, by how much, where and between which builds; delivery reaches real
receivers on 127.0.0.1 (an HTTP server for the webhook and for Slack's webhook format, a small SMTP server)."""

from __future__ import annotations

import dataclasses
import email
import json
import socketserver
import threading
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from support.samples import bisection

from vramwatch import pipeline
from vramwatch.alerts.delivery import AlertChannels, AlertDeliveryError, deliver, send_alerts
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


class HttpReceiver(ThreadingHTTPServer):
    """Keeps each JSON body it accepts; the first `failures` requests get a 500 instead, and are not kept."""

    def __init__(self, failures: int = 0) -> None:
        self.bodies: list[dict] = []
        self.failures = failures
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if receiver.failures > 0:
                    receiver.failures -= 1
                    self.send_error(500)
                    return
                receiver.bodies.append(body)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class SmtpReceiver(socketserver.ThreadingTCPServer):
    """Enough of RFC 5321 for smtplib: greeting, EHLO, MAIL, RCPT, DATA, QUIT. Keeps each message it accepts."""

    daemon_threads = True

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], email.message.EmailMessage]] = []
        receiver = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write(line.encode() + b"\r\n")

            def handle(self) -> None:
                self.reply("220 127.0.0.1 test SMTP")
                recipients: list[str] = []
                while line := self.rfile.readline().decode().rstrip("\r\n"):
                    verb = line.split(" ", 1)[0].upper()
                    if verb in ("EHLO", "HELO"):
                        self.reply("250 127.0.0.1")
                    elif verb == "MAIL":
                        recipients = []
                        self.reply("250 OK")
                    elif verb == "RCPT":
                        recipients.append(line.split(":", 1)[1].strip(" <>"))
                        self.reply("250 OK")
                    elif verb == "DATA":
                        self.reply("354 end with <CRLF>.<CRLF>")
                        data = []
                        while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                            data.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                        message = email.message_from_bytes(b"".join(data), policy=policy.default)
                        receiver.messages.append((recipients, message))
                        self.reply("250 OK queued")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    else:
                        self.reply("250 OK")

        super().__init__(("127.0.0.1", 0), Handler)


def serving(server):
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


@pytest.fixture
def receivers():
    webhook, slack, smtp = serving(HttpReceiver()), serving(HttpReceiver()), serving(SmtpReceiver())
    channels = AlertChannels(webhook_url=webhook.url, smtp_host="127.0.0.1", smtp_port=smtp.server_address[1],
                             email_to=["gpu-ops@example.com", "oncall@example.com"], slack_webhook_url=slack.url)
    yield channels, webhook, slack, smtp
    for server in (webhook, slack, smtp):
        server.shutdown()
        server.server_close()


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
    assert "5 builds measured (5 candidates between 0.3.30 and 0.3.36)" in alert.text
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
    assert "+64 MiB, +31.3%" in slack_body["text"] and "b5039 -> b5040" in slack_body["text"]
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
    dead = AlertChannels(webhook_url=webhook.url, smtp_host="127.0.0.1", smtp_port=smtp.server_address[1],
                         email_to=["a@example.com"], slack_webhook_url="http://127.0.0.1:9/nothing-listens")

    with pytest.raises(AlertDeliveryError, match="slack"):
        deliver(failure_alert("2026-02-10", "r1", "bench", "boom"), dead)
    assert len(webhook.bodies) == 1 and len(smtp.messages) == 1


def test_channels_from_env(monkeypatch):
    monkeypatch.setenv("VRAMWATCH_ALERT_WEBHOOK", "http://127.0.0.1:1/h")
    monkeypatch.setenv("VRAMWATCH_ALERT_SMTP", "mail.local:2525")
    monkeypatch.setenv("VRAMWATCH_ALERT_EMAIL_TO", "a@x, b@x")
    monkeypatch.setenv("VRAMWATCH_ALERT_SLACK_WEBHOOK", "https://hooks.slack.com/services/T/B/X")

    channels = AlertChannels.from_env()

    assert (channels.smtp_host, channels.smtp_port, channels.email_to) == ("mail.local", 2525, ["a@x", "b@x"])
    assert channels.slack_webhook_url.startswith("https://hooks.slack.com/")
    monkeypatch.setenv("VRAMWATCH_ALERT_SMTP", "mail.local:smtp")
    with pytest.raises(Exception, match="host:port"):
        AlertChannels.from_env()


def test_a_failed_night_alerts_through_the_dag_callback(receivers, monkeypatch, tmp_path):
    channels, webhook, _, smtp = receivers
    monkeypatch.setenv("VRAMWATCH_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("VRAMWATCH_ALERT_WEBHOOK", channels.webhook_url)
    monkeypatch.setenv("VRAMWATCH_ALERT_SMTP", f"127.0.0.1:{channels.smtp_port}")
    monkeypatch.setenv("VRAMWATCH_ALERT_EMAIL_TO", "oncall@example.com")

    class TaskInstance:
        task_id, log_url = "build_engine", "http://airflow/log/1"

    context = {"ds": "2026-02-10", "run_id": "scheduled__2026-02-10", "ti": TaskInstance(),
               "exception": RuntimeError("nvcc: command not found")}
    assert pipeline.task_failure_alert(context) == 2

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
    channels = AlertChannels(webhook_url=f"hooks.slack.com/services/T0/B0/{SECRET}",
                             slack_webhook_url=f"http://127.0.0.1:9/services/T0/B0/{SECRET}")

    with pytest.raises(AlertDeliveryError) as failed:
        deliver(failure_alert("2026-02-10", "r1", "bench", "boom"), channels)

    assert str(failed.value).startswith("alert delivery failed: webhook (hooks.slack.com/…): ValueError; "
                                        "slack (http://127.0.0.1/…): Connection refused (fix: ")
    assert SECRET not in str(failed.value) and SECRET not in repr(channels)
    assert failed.value.__context__ is None


def test_a_retried_alert_pages_only_the_channels_that_failed(receivers, monkeypatch, tmp_path):
    """Fault: a webhook returning 500 failed the alert task, and its retry paged Slack (and e-mail) a second time.
    Delivery is now kept per night and channel (reports/<night>/alerts_delivered.json), so the retry, through the
    DAG's alert task, sends to the webhook only; another run of the night is another alert."""
    channels, _, slack, smtp = receivers
    webhook = serving(HttpReceiver(failures=1))
    monkeypatch.setenv("VRAMWATCH_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("VRAMWATCH_ALERT_WEBHOOK", webhook.url)
    monkeypatch.setenv("VRAMWATCH_ALERT_SLACK_WEBHOOK", channels.slack_webhook_url)
    monkeypatch.setenv("VRAMWATCH_ALERT_SMTP", f"127.0.0.1:{channels.smtp_port}")
    monkeypatch.setenv("VRAMWATCH_ALERT_EMAIL_TO", "oncall@example.com")
    night = summary(incident()).to_dict()

    try:
        with pytest.raises(AlertDeliveryError, match="webhook"):
            pipeline.task_alert(night)
        assert (len(slack.bodies), len(smtp.messages), webhook.bodies) == (1, 1, [])

        assert pipeline.task_alert(night) == 1  # the retry

        assert (len(slack.bodies), len(smtp.messages), len(webhook.bodies)) == (1, 1, 1)
        assert pipeline.task_alert(night) == 0  # a third try has nobody left to page
        assert len(webhook.bodies) == 1
        rerun = summary(incident()).to_dict() | {"run_id": "manual__2026-02-10"}
        assert pipeline.task_alert(rerun) == 3  # a new run of the night is a new alert, not a retry
    finally:
        webhook.shutdown()
        webhook.server_close()
