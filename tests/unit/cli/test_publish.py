"""`vramwatch publish`: the static site, by hand, where the nightly writes it or where --out says."""

from __future__ import annotations

from support.samples import night
from support.warehouses import store_nights

from vramwatch.cli.main import main


def test_it_writes_the_site_where_the_nightly_does_or_to_out_from_the_warehouse_it_names(warehouse, tmp_path,
                                                                                        capsys, monkeypatch):
    store_nights(warehouse, [night(gpu=False)] * 2)

    assert main(["publish"]) == 0
    assert (tmp_path / "reports" / "site" / "index.html").is_file()  # the nightly's folder, the plugin's /site/
    assert "files" in capsys.readouterr().out
    monkeypatch.setenv("VRAMWATCH_WAREHOUSE_URL", "sqlite:///" + str(tmp_path / "elsewhere.db"))  # not read
    assert main(["publish", "--out", str(tmp_path / "out"), "--warehouse", warehouse.url]) == 0
    out = capsys.readouterr().out
    assert f"site {tmp_path / 'out'}:" in out and "python -m http.server" in out
    assert "run000" in (tmp_path / "out" / "downloads.html").read_text()


def test_an_unreachable_warehouse_is_one_line_and_a_fix(tmp_path, capsys):
    assert main(["publish", "--out", str(tmp_path / "out"),
                 "--warehouse", "postgresql+psycopg2://nobody@127.0.0.1:1/none"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot open the warehouse") and "fix:" in err
