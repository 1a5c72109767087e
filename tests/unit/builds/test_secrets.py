"""A token in a private index or git URL (build.location: http://user:TOKEN@host/...) is sent as real credentials and
never leaves the process as text: not in a log line, an error, an XCom, the warehouse, a build log, an alert or a
report, and never as part of a host name given to the resolver.

Real servers on 127.0.0.1 that demand basic auth (tests/support/private_sources.py), real pip and git, real
PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import subprocess
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from support.git_repos import commit, git, init_repo
from support.private_sources import PrivateGit, PrivateIndex
from support.receivers import HttpReceiver
from support.samples import bisection
from support.warehouses import NIGHTS, three_nights

from vramwatch import pipeline
from vramwatch.alerts.delivery import AlertChannels, deliver
from vramwatch.alerts.messages import failure_from_context
from vramwatch.builds.detect import check_for_new_build, git_tags
from vramwatch.builds.process import StepFailed
from vramwatch.builds.sources import fetch_commit, fetch_sdist, pip_index
from vramwatch.config import BuildSource, Paths, Policy, load_matrix
from vramwatch.errors import UserError
from vramwatch.records import BuildRequest
from vramwatch.redact import redact
from vramwatch.warehouse.store import Warehouse
from vramwatch.warehouse.tempdb import temporary_database

USER, TOKEN = "ci", "tok3nS3CRETvalue"
PG_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def lookups(monkeypatch) -> list[str]:
    """Every host name this process asks the resolver for."""
    asked: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        asked.append(str(host))
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


@pytest.fixture
def index():
    server = PrivateIndex(USER, TOKEN)
    yield server
    server.shutdown()


@pytest.fixture
def private_repo(tmp_path):
    """A bare llama.cpp-like repository behind git's smart HTTP with basic auth: tags b1 and b2."""
    work = init_repo(tmp_path / "work")
    for tag in ("b1", "b2"):
        commit(work, tag, {"VERSION": tag})
        git(work, "tag", tag)
    root = tmp_path / "served"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(work), str(root / "llama.cpp.git")], check=True)
    server = PrivateGit(root, USER, TOKEN)
    yield server, git(work, "rev-parse", "b2")
    server.shutdown()


def leaks(*texts: str) -> list[str]:
    return [text for text in texts if TOKEN in text]


def test_redact_masks_every_url_user_part():
    assert redact(f"cannot reach https://{USER}:{TOKEN}@h:8/simple/ (and git http://{TOKEN}@g/x.git)") == \
        "cannot reach https://***@h:8/simple/ (and git http://***@g/x.git)"
    assert redact("ops@example.com ssh-like git@github.com:org/repo") == "ops@example.com ssh-like git@github.com:org/repo"


def test_index_token_is_basic_auth_not_a_host_name(index, lookups):
    source = BuildSource(location=f"http://{USER}:{TOKEN}@{index.base}/simple")
    check = check_for_new_build(source, None)
    assert check.latest == "0.3.99"
    assert index.authorized == ["/simple/llama-cpp-python/"]  # the server saw the user and token as credentials
    assert not leaks(*lookups), lookups
    assert not leaks(json.dumps(check.to_dict()), source.model_dump_json())


def test_git_token_is_an_http_header_not_a_host_name(private_repo, lookups, tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("VRAMWATCH_CACHE_DIR", str(tmp_path / "cache"))
    server, b2 = private_repo
    location = f"http://{USER}:{TOKEN}@{server.base}/llama.cpp.git"
    source = BuildSource(source="git", location=location)
    assert git_tags(source.location)["b2"] == b2
    log = tmp_path / "build.log"
    with caplog.at_level(logging.INFO, logger="vramwatch"):
        repo, fetched = fetch_commit(source.location, "b2", Paths(tmp_path), log)
    assert fetched == b2
    assert server.authorized  # git sent the token as credentials
    remotes = subprocess.run(["git", "-C", str(repo), "config", "--list"], capture_output=True, text=True).stdout
    assert not leaks(*lookups, caplog.text, log.read_text(), remotes, str(repo))
    with pytest.raises(UserError) as refused:  # the wrong token: refused, and the message names no token
        git_tags(f"http://{USER}:wrong{TOKEN}@{server.base}/llama.cpp.git")
    assert not leaks(str(refused.value))


def command_lines() -> list[str]:
    """Every process's command line, as any local user can read it in /proc."""
    lines = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            lines.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:  # the process ended while being read
            pass
    return lines


def test_pip_gets_the_index_token_outside_its_command_line(index, tmp_path):
    """Fault: pip ran with --index-url http://user:TOKEN@host/..., readable by every local user in
    /proc/<pid>/cmdline. A real pip download from the index that demands basic auth, every command line on the
    machine read over and over while it runs: pip is seen, the index sees the token, no command line holds it."""
    request = BuildRequest(version="0.3.99", location=f"http://{USER}:{TOKEN}@{index.base}/simple")
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.extend(line for line in command_lines() if "pip download" in line or TOKEN in line)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with pytest.raises(StepFailed):  # the index's sdist link answers 404
            fetch_sdist(request.version, pip_index(request), Paths(tmp_path), tmp_path / "build.log")
    finally:
        done.set()
        watcher.join()
    assert "/files/llama_cpp_python-0.3.99.tar.gz" in index.authorized  # pip sent the token as basic auth
    assert any("pip download" in line for line in seen)  # the watcher saw pip running
    assert not leaks(*seen), leaks(*seen)[0]


def test_a_failing_night_from_a_private_index_keeps_the_token_in(index, lookups, tmp_path, monkeypatch, caplog):
    """Detect, then a build whose sdist download fails in pip (with the credentials: the index saw them), stored on
    PostgreSQL; the failure alert goes to a Slack receiver and the webhook; then the same night with the index
    unreachable. Every log line, XCom, table row, build log, alert body and error is searched for the token."""
    monkeypatch.setenv("VRAMWATCH_HOME", str(tmp_path))
    monkeypatch.setenv("VRAMWATCH_CACHE_DIR", str(tmp_path / "cache"))  # no cached sdist: pip must fetch it
    slack, webhook = HttpReceiver(), HttpReceiver()
    for receiver in (slack, webhook):
        threading.Thread(target=receiver.serve_forever, daemon=True).start()
    monkeypatch.setenv("VRAMWATCH_ALERT_SLACK_WEBHOOK", slack.url)
    monkeypatch.setenv("VRAMWATCH_ALERT_WEBHOOK", webhook.url)
    demo = load_matrix("demo")
    matrix = demo.model_copy(update={"build": BuildSource(location=f"http://{USER}:{TOKEN}@{index.base}/simple",
                                                          backend="cpu")})
    texts: list[str] = []
    with temporary_database(PG_SERVER) as url, caplog.at_level(logging.INFO, logger="vramwatch"):
        monkeypatch.setenv("VRAMWATCH_WAREHOUSE_URL", url)
        warehouse = Warehouse(url)
        check = pipeline.detect_build(matrix, True, warehouse)
        texts.append(json.dumps(check.to_dict()))
        with pytest.raises(pipeline.BuildFailed) as failed:
            pipeline.build_engine(matrix, check.latest)
        assert "/files/llama_cpp_python-0.3.99.tar.gz" in index.authorized  # pip sent the token as basic auth
        unreachable = matrix.model_copy(update={"build": BuildSource(location=f"http://{USER}:{TOKEN}@127.0.0.1:9/s")})
        with pytest.raises(UserError) as unreached:
            pipeline.detect_build(unreachable, True, warehouse)
        for error in (failed.value, unreached.value):
            alert = failure_from_context({"ds": "2026-12-07", "run_id": "night", "exception": error})
            deliver(alert, AlertChannels.from_env())
            texts += [str(error), alert.subject, alert.text, json.dumps(alert.payload)]
        engine = sa.create_engine(url)
        with engine.connect() as connection:
            for table in sa.inspect(engine).get_table_names():
                texts += [repr(row) for row in connection.execute(sa.text(f'SELECT * FROM "{table}"'))]
            assert connection.execute(sa.text("SELECT location FROM builds")).scalar_one() == \
                f"http://***@{index.base}/simple"
        engine.dispose()
        warehouse.close()
    texts += [json.dumps(body) for body in slack.bodies + webhook.bodies]
    texts += [path.read_text(errors="replace") for path in (tmp_path / "builds").rglob("*") if path.is_file()]
    texts.append(caplog.text)
    assert len(slack.bodies) == len(webhook.bodies) == 2
    assert "cannot reach package index http://***@127.0.0.1:9/s" in slack.bodies[1]["text"]
    assert not leaks(*texts), leaks(*texts)[0]
    assert not leaks(*lookups), lookups
    for receiver in (slack, webhook):
        receiver.shutdown()


def test_a_report_quoting_a_url_with_the_token_shows_it_masked(sqlite_warehouse_url, tmp_path, monkeypatch):
    """The report is text that leaves the process too: a stored bisection that stopped on a fetch error quoting a URL
    with its token (written by an older version) shows it masked in the night's Markdown and HTML."""
    monkeypatch.setenv("VRAMWATCH_REPORTS_DIR", str(tmp_path / "reports"))
    for channel in ("WEBHOOK", "SMTP", "EMAIL_TO", "SLACK_WEBHOOK"):
        monkeypatch.delenv(f"VRAMWATCH_ALERT_{channel}", raising=False)
    url = sqlite_warehouse_url
    incident = three_nights(url)
    warehouse = Warehouse(url)
    stopped = f"cannot fetch llama.cpp from http://{USER}:{TOKEN}@10.0.0.1/llama.cpp.git"
    warehouse.save_bisection(incident.incident_id, dataclasses.replace(bisection(found=False), stopped=stopped))
    run_id = f"scheduled__{NIGHTS[-1]}"
    summary = pipeline.report(run_id, pipeline.detect_regressions(run_id, Policy(), warehouse, save=False), warehouse)
    warehouse.close()
    written = [path.read_text() for path in (tmp_path / "reports").rglob("*") if path.is_file()]
    assert "http://***@10.0.0.1/llama.cpp.git" in Path(summary.report_md).read_text()
    assert written and not leaks(*written)
