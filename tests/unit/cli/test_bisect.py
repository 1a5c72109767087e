"""`vramwatch bisect`: bad input is one line and its fix; a search that stops says why and exits 1."""

from __future__ import annotations

import json

import pytest
from support.git_repos import commit, init_repo

from vramwatch.cli.main import main

CONFIG = "deepseek-moe-16b-tiny/Q4_K_M/baseline"


@pytest.mark.parametrize(("args", "error"), [
    (["--metric", "vram"], "--metric 'vram' is not something a bench measures"),
    (["--config", "nope/Q4_K_M/baseline"], "--config 'nope/Q4_K_M/baseline' names no model of matrix demo"),
    (["--level", "commit", "--good", "abc123"], "--good 'abc123' is not a full llama.cpp commit hash"),
    (["--metric", "tg", "--bad-figure", "260.39"], "a throughput bisection measures the bad build in an A/B: it "
                                                   "takes no given figure"),
])
def test_bad_input_is_one_line_and_its_fix(args, error, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("VRAMWATCH_CACHE_DIR", str(tmp_path / "cache"))
    repo = init_repo(tmp_path / "llama.cpp")
    good, bad = commit(repo, "a", {"f": "a"}), commit(repo, "b", {"f": "b"})
    given = {"--config": CONFIG, "--good": good, "--bad": bad, "--repository": str(repo), "--level": "commit",
             "--metric": "CPU/compute"} | dict(zip(args[::2], args[1::2]))

    assert main(["bisect", *[part for pair in given.items() for part in pair]]) == 2

    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"error: {error}" and err[1].startswith("  fix: ") and len(err) == 2


def test_a_search_that_cannot_start_prints_why_writes_the_result_and_exits_1(capsys, tmp_path, monkeypatch):
    """Fault: the range is not reachable (good after bad): exit 1, the reason on stdout and in --out."""
    monkeypatch.setenv("VRAMWATCH_CACHE_DIR", str(tmp_path / "cache"))
    repo = init_repo(tmp_path / "llama.cpp")
    older, newer = commit(repo, "a", {"f": "a"}), commit(repo, "b", {"f": "b"})
    out = tmp_path / "result.json"

    assert main(["bisect", "--config", CONFIG, "--good", newer, "--bad", older, "--level", "commit", "--metric",
                 "CPU/compute", "--repository", str(repo), "--out", str(out)]) == 1

    assert f"is not an ancestor of {older[:12]}" in capsys.readouterr().out
    assert json.loads(out.read_text())["stopped"].startswith("the range is not reachable")
