"""Creators' opt-outs: the list's syntax and its errors, the matching rules, and a demo build that honours a list
served over (loopback) HTTP, re-cleans when it changes, and refuses to run when it cannot be fetched."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from openverse_dataset.cli import main
from openverse_dataset.layout import DataLayout
from openverse_dataset.media import IMAGE
from openverse_dataset.transform import optout
from openverse_dataset.transform.clean import clean_lazy
from openverse_dataset_tests.test_build import tree_digest

LIST = """\
# opt-outs (a comment)

creator https://www.Flickr.com/photos/jane/
prefix  http://example.org/gallery/bob/
domain  Example.NET
domain  sub.example.net
"""


def _frame(rows: list[tuple[str | None, str | None, str | None]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["creator_url", "foreign_landing_url", "url"], orient="row")


def test_each_kind_matches_as_documented():
    opt = optout.parse(LIST, "list.txt", "0" * 64)
    assert opt.entries == 4 and opt.domains.to_list() == ["ten.elpmaxe."]  # the subdomain entry is covered
    rows = [
        ("https://flickr.com/photos/jane", None, "https://media.test/1.jpg"),  # creator: scheme, www, / ignored
        ("https://flickr.com/photos/janet", None, "https://media.test/2.jpg"),  # another creator
        (None, "https://EXAMPLE.org/gallery/bob", "https://media.test/3.jpg"),  # the prefix's own folder page
        (None, "https://example.org/gallery/bob/7", "https://media.test/4.jpg"),  # under the prefix
        (None, "https://example.org/gallery/bobby/7", "https://media.test/5.jpg"),  # not under it
        (None, None, "https://cdn.a.example.net:8080/6.jpg"),  # a subdomain of a domain entry (url's host)
        ("https://example.net", None, "https://media.test/7.jpg"),  # the domain itself (creator_url's host)
        (None, "https://notexample.net/8", "https://example.net.evil.test/8.jpg"),  # look-alikes do not match
        (None, None, None),
    ]
    got = optout.match_frame(_frame(rows), opt).collect()["opted_out"].to_list()
    assert got == [True, False, True, True, False, True, True, False, False]
    assert optout.match_frame(_frame(rows), optout.NO_OPT_OUTS).collect()["opted_out"].sum() == 0


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("creatr https://a.org/x", "cannot read"),
        ("creator a.org/x", "not an http(s) URL"),
        ("prefix https://a.org/x extra", "cannot read"),
        ("domain https://a.org", "not a host name"),
        ("domain localhost", "not a host name"),
    ],
)
def test_a_bad_line_names_the_file_and_line_and_the_syntax(tmp_path: Path, line: str, problem: str):
    path = tmp_path / "opt-outs.txt"
    path.write_text(f"# ok\ndomain a.org\n{line}\n")
    with pytest.raises(optout.OptOutError) as err:
        optout.load(str(path))
    message = str(err.value)
    assert f"{path}:3" in message and problem in message and "domain <host name>" in message
    assert "\n" not in message


def test_an_unreadable_list_fails_with_one_line(tmp_path: Path):
    with pytest.raises(optout.OptOutError, match="cannot read"):
        optout.load(str(tmp_path / "missing.txt"))
    (tmp_path / "bin.txt").write_bytes(b"domain \xff\xfe.org\n")
    with pytest.raises(optout.OptOutError, match="not UTF-8"):
        optout.load(str(tmp_path / "bin.txt"))
    assert optout.load(None) is optout.NO_OPT_OUTS


# --- end to end, the list served by a loopback HTTP server ----------------------------------------------------


class _Server:
    """Serves `body` at /opt-outs.txt (or answers `status` when set), on 127.0.0.1."""

    def __init__(self) -> None:
        self.body, self.status = b"", 200
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(owner.status)
                self.end_headers()
                if owner.status == 200:
                    self.wfile.write(owner.body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/opt-outs.txt?token=s3cret"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def opt_out_server() -> Iterator[_Server]:
    with _Server() as server:
        yield server


def _released(env: Path) -> pl.DataFrame:
    return pl.read_parquet(env / "hub" / "openverse-images" / "data" / "*" / "*" / "*.parquet")


def test_opted_out_creators_rows_are_absent_counted_and_come_back_when_the_list_changes(
    env: Path, opt_out_server: _Server, monkeypatch, capsys
):
    from openverse_dataset_tests.conftest import raw_frame

    raw = raw_frame(IMAGE)
    creator = raw.filter(pl.col("provider") == "flickr").group_by("creator_url").len().sort("len", "creator_url")[-1, 0]

    # chosen from the data, matched here with plain Python: the creator (with or without a scheme, as stored),
    # and every work on deviantart.com
    def bare(url: str | None) -> str:
        return (url or "").lower().removeprefix("https://").removeprefix("http://").removeprefix("www.").rstrip("/")

    def opted(r: dict) -> bool:
        return bare(r["creator_url"]) == bare(creator) or "deviantart.com/" in (r["foreign_landing_url"] or "")

    wanted = {r["identifier"] for r in raw.iter_rows(named=True) if opted(r)}
    assert len(wanted) > 20
    opt_out_server.body = f"# test list\ncreator {creator.upper()}\ndomain deviantart.com\n".encode()
    monkeypatch.setenv("OPENVERSE_OPT_OUT_LIST", opt_out_server.url)

    assert main(["build", "--media", "image"]) == 0
    released = _released(env)
    assert wanted.isdisjoint(released["identifier"].to_list())
    rejects = pl.read_parquet(env / "rejects" / "image" / "*" / "*.parquet")
    opted_rows = set(rejects.filter(pl.col("reason") == "opted_out")["identifier"].to_list())
    # a takedown still counts as one (it wins over the opt-out); everything else listed is `opted_out`
    tk = pl.scan_parquet(DataLayout(env).takedowns_file("image"))
    before = clean_lazy(raw.lazy(), IMAGE, tk).collect()
    earlier = {"taken_down", "deleted_in_catalog", "mature", "source_hidden"}
    taken = set(before.filter(pl.col("_reject").is_in(list(earlier)))["identifier"].to_list())
    assert opted_rows == wanted - taken and opted_rows
    card = (env / "hub" / "openverse-images" / "README.md").read_text()
    sha = hashlib.sha256(opt_out_server.body).hexdigest()
    assert f"This release left out {len(opted_rows):,} rows at their creators' request" in card
    assert sha in card and "github.com/WordPress/openverse/issues" in card
    assert f"| opted_out | {len(opted_rows):,} |" in card
    assert "s3cret" not in capsys.readouterr().out
    first = tree_digest(env / "hub" / "openverse-images" / "data")

    # the list changes: every partition is cleaned again in full and the rows are back
    opt_out_server.body = b"# nobody\n"
    assert main(["build", "--media", "image"]) == 0
    back = wanted & set(before.filter(pl.col("_reject").is_null())["identifier"].to_list())
    assert back and back <= set(_released(env)["identifier"].to_list())
    assert "This release left out 0 rows" in (env / "hub" / "openverse-images" / "README.md").read_text()

    # and back to the first list: byte-identical files to the first build
    opt_out_server.body = f"# test list\ncreator {creator.upper()}\ndomain deviantart.com\n".encode()
    assert main(["build", "--media", "image"]) == 0
    assert tree_digest(env / "hub" / "openverse-images" / "data") == first
    removals = pl.read_parquet(env / "hub" / "openverse-images" / "removals.parquet")
    assert set(removals.filter(pl.col("reason") == "opted_out")["identifier"].to_list()) == back
    capsys.readouterr()

    # a list that cannot be fetched stops the build before any job: never a release without the opt-outs
    opt_out_server.status = 503
    assert main(["build", "--media", "image"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "opt-out list" in err[0] and "HTTP 503" in err[0] and "s3cret" not in err[0]
    assert tree_digest(env / "hub" / "openverse-images" / "data") == first
