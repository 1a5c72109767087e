"""Unpacking sdists and git archives: nothing may land outside the destination, on any Python 3.11."""

from __future__ import annotations

import io
import tarfile

import pytest

from vramwatch.builds.sources import extract_all


def archive(tmp_path, *members: tarfile.TarInfo) -> tarfile.TarFile:
    path = tmp_path / "a.tar"
    with tarfile.open(path, "w") as tar:
        for member in members:
            tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    return tarfile.open(path)


def entry(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.linkname, member.size = kind, linkname, 1 if kind == tarfile.REGTYPE else 0
    return member


@pytest.mark.parametrize("with_filter", [True, False], ids=["python-with-data-filter", "debian-12-python-3.11.2"])
def test_members_inside_are_extracted_and_any_that_would_leave_is_refused(tmp_path, monkeypatch, with_filter):
    """Fault: extractall(filter=...) raised TypeError on Debian 12's Python 3.11.2 (no PEP 706), so the GPU worker
    image built on it failed every engine build."""
    if not with_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    with archive(tmp_path, entry("top/a.txt"), entry("top/link", tarfile.SYMTYPE, "a.txt")) as tar:
        extract_all(tar, tmp_path / "out")
    assert (tmp_path / "out/top/a.txt").read_text() == "x" and (tmp_path / "out/top/link").read_text() == "x"
    for bad in (entry("../evil"), entry("top/out", tarfile.SYMTYPE, "../../evil")):
        with archive(tmp_path, bad) as tar, pytest.raises(tarfile.TarError):
            extract_all(tar, tmp_path / "out2")
    assert not (tmp_path / "evil").exists()
