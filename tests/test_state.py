"""pgpitr/state.py: where the home is, the cluster's paths, cluster.json written atomically and
read back (real files in a temporary directory)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import pytest

from pgpitr import state
from pgpitr.errors import InvalidInput
from pgpitr.state import NAME_RULE, ClusterState


def _state(home: Path, **changes: object) -> ClusterState:
    values: dict = dict(
        name="my-pg",
        platform="local",
        port=5433,
        repository="file:///r",
        bindir="/usr/lib/postgresql/15/bin",
        os_user="postgres",
        home=str(home),
    )
    values.update(changes)
    return ClusterState(**values)


# -- the home ------------------------------------------------------------------------------------


def test_an_explicit_home_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPITR_HOME", "/somewhere/else")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert state.home() == Path("/somewhere/else")


def test_root_without_a_home_uses_var_lib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGPITR_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", "/xdg")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert state.home() == Path("/var/lib/pgpitr")


def test_a_user_without_a_home_uses_xdg_data_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGPITR_HOME", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_DATA_HOME", "/xdg/data")
    assert state.home() == Path("/xdg/data/pgpitr")
    monkeypatch.setenv("XDG_DATA_HOME", "")  # empty: as if unset
    monkeypatch.setenv("HOME", "/home/alice")
    assert state.home() == Path("/home/alice/.local/share/pgpitr")


def test_clusters_dir_and_default_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPITR_HOME", "/h")
    assert state.clusters_dir() == Path("/h/clusters")
    assert state.clusters_dir(Path("/b")) == Path("/b/clusters")
    assert str(state.default_repository_url()) == "file:///h/repo"
    assert str(state.default_repository_url(Path("/b"))) == "file:///b/repo"


# -- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "my-pg", "pg15", "a" * 48, "a-b-c-1"])
def test_names_the_rule_accepts(name: str) -> None:
    assert NAME_RULE.fullmatch(name)


@pytest.mark.parametrize(
    "name", ["", "A", "1pg", "-pg", "pg-", "my_pg", "my pg", "a" * 49, "ü", "a/b", "a.b"]
)
def test_names_the_rule_refuses(name: str) -> None:
    assert NAME_RULE.fullmatch(name) is None


# -- ClusterState --------------------------------------------------------------------------------


def test_paths_are_under_the_home(tmp_path: Path) -> None:
    st = _state(tmp_path)
    base = tmp_path / "clusters" / "my-pg"
    assert st.dir == base
    assert st.datadir == base / "data"
    assert st.socket_dir == base / "run"
    assert st.log_file == base / "log" / "postgresql.log"
    assert st.spool == base / "spool"
    assert st.credentials_file == base / "aws-credentials"
    assert st.stanza == "my-pg"


def test_defaults() -> None:
    st = ClusterState(
        name="x", platform="local", port=1, repository="file:///r", bindir="b", os_user="u"
    )
    assert (st.system_identifier, st.pg_version, st.wal_segment_size) == ("", 15, 16 << 20)
    assert (st.created, st.restore_source, st.home) == ("", {}, "")
    other = ClusterState(
        name="y", platform="local", port=1, repository="file:///r", bindir="b", os_user="u"
    )
    other.restore_source["from"] = "x"
    assert st.restore_source == {}  # not one dict shared by every state


def test_save_writes_cluster_json_without_the_home(tmp_path: Path) -> None:
    st = _state(tmp_path, system_identifier="7000000000000000001", restore_source={"from": "a"})
    st.save()
    path = tmp_path / "clusters" / "my-pg" / "cluster.json"
    saved = json.loads(path.read_text())
    assert "home" not in saved
    assert saved == {
        "name": "my-pg",
        "platform": "local",
        "port": 5433,
        "repository": "file:///r",
        "bindir": "/usr/lib/postgresql/15/bin",
        "os_user": "postgres",
        "system_identifier": "7000000000000000001",
        "pg_version": 15,
        "host": st.host,
        "wal_segment_size": 16 * 1024 * 1024,
        "created": "",
        "restore_source": {"from": "a"},
    }
    assert list(saved) == sorted(saved)  # sorted keys: diffs stay readable
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_load_reads_back_what_save_wrote_with_the_home_it_was_read_from(tmp_path: Path) -> None:
    st = _state(tmp_path, port=6000, created="2026-12-01T00:00:00+00:00")
    st.save()
    loaded = ClusterState.load("my-pg", tmp_path)
    assert loaded == st
    assert loaded.home == str(tmp_path)
    # moved elsewhere, the state follows the home it is loaded from (the home is not stored)
    moved = tmp_path / "moved"
    (moved / "clusters").mkdir(parents=True)
    os.rename(tmp_path / "clusters" / "my-pg", moved / "clusters" / "my-pg")
    assert ClusterState.load("my-pg", moved).datadir == moved / "clusters" / "my-pg" / "data"


def test_load_uses_the_environments_home_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGPITR_HOME", str(tmp_path))
    _state(tmp_path, port=7001).save()
    assert ClusterState.load("my-pg").port == 7001


def test_load_ignores_keys_it_does_not_know_and_fills_missing_defaults(tmp_path: Path) -> None:
    path = tmp_path / "clusters" / "old" / "cluster.json"
    path.parent.mkdir(parents=True)
    data = {k: v for k, v in asdict(_state(tmp_path, name="old")).items() if k != "home"}
    data["repository"] = "file:///r"  # cluster.json holds the URL's text
    data["retired_setting"] = "whatever"  # written by another version
    del data["pg_version"]
    path.write_text(json.dumps(data))
    loaded = ClusterState.load("old", tmp_path)
    assert loaded.name == "old" and loaded.pg_version == 15
    assert not hasattr(loaded, "retired_setting")


def test_load_of_an_unknown_cluster_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ClusterState.load("missing", tmp_path)


def test_write_json_atomic_creates_parents_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "doc.json"
    state.write_json_atomic(path, {"b": 1, "a": [1, 2]}, mode=0o600)
    assert path.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}'
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    state.write_json_atomic(path, {"replaced": True})
    assert json.loads(path.read_text()) == {"replaced": True}
    assert [p.name for p in path.parent.iterdir()] == ["doc.json"]


def test_write_json_atomic_keeps_the_old_file_when_the_data_cannot_be_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "doc.json"
    state.write_json_atomic(path, {"kept": 1})
    with pytest.raises(TypeError):
        state.write_json_atomic(path, {"bad": object()})  # not serialisable, half written
    assert json.loads(path.read_text()) == {"kept": 1}


def test_each_writer_of_a_file_has_a_temporary_of_its_own(tmp_path, monkeypatch) -> None:
    """Two writers of one file (two WAL fetch workers) must never share a temporary: one would
    rename the other's half-written bytes into place."""
    import os

    from pgpitr import osutil

    renamed: list[str] = []
    real_rename = os.rename

    def recording(source, destination):
        renamed.append(os.path.basename(source))
        real_rename(source, destination)

    monkeypatch.setattr(osutil.os, "rename", recording)
    target = tmp_path / "segment"
    osutil.write_atomic(target, b"first")
    osutil.write_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert len(set(renamed)) == 2 and all(n.startswith(".segment.") for n in renamed)
    assert [p.name for p in tmp_path.iterdir()] == ["segment"]  # no temporary left


def test_a_failed_write_leaves_no_temporary_and_the_old_file(tmp_path, monkeypatch) -> None:
    from pgpitr import osutil

    target = tmp_path / "segment"
    osutil.write_atomic(target, b"old")

    def refuse(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(osutil.os, "rename", refuse)
    with pytest.raises(OSError, match="No space left"):
        osutil.write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["segment"]


def test_a_cluster_belongs_to_this_host_unless_pgpitr_host_says_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    monkeypatch.delenv("PGPITR_HOST", raising=False)
    assert state.this_host() == socket.gethostname()
    monkeypatch.setenv("PGPITR_HOST", "db1.example.com")
    st = _state(tmp_path)
    assert st.host == "db1.example.com"
    st.save()
    monkeypatch.setenv("PGPITR_HOST", "elsewhere")
    assert ClusterState.load("my-pg", tmp_path).host == "db1.example.com"  # recorded
    monkeypatch.setenv("PGPITR_HOST", "no/slash")
    with pytest.raises(InvalidInput, match="invalid host name 'no/slash'"):
        state.this_host()


def test_the_account_the_install_gave_the_system_home_gets_it_by_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pgpitr import privilege

    monkeypatch.delenv("PGPITR_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", "/xdg/data")
    monkeypatch.setattr(privilege, "SYSTEM_HOME", tmp_path)
    monkeypatch.setattr(os, "geteuid", lambda: tmp_path.stat().st_uid)
    assert state.home() == tmp_path
    monkeypatch.setattr(os, "geteuid", lambda: tmp_path.stat().st_uid + 1)  # someone else's
    assert state.home() == Path("/xdg/data/pgpitr")


@pytest.mark.parametrize(
    ("argv", "stays"),
    [
        ([], True),
        (["--help"], True),
        (["cluster", "--help"], True),
        (["install"], True),
        (["agent", "install-service", "--dir", "/x"], True),
        (["cluster", "create", "install"], False),
        (["agent", "start"], False),
        (["--stats", "cluster", "list"], False),
        (["wal-push", "--cluster", "a", "pg_wal/x"], False),
    ],
)
def test_root_keeps_its_rights_only_to_install_and_for_help(argv: list[str], stays: bool) -> None:
    from pgpitr.__main__ import _stays_root

    assert _stays_root(argv) is stays


def test_a_registered_servers_log_is_its_collectors_current_file(tmp_path: Path) -> None:
    datadir = tmp_path / "data"
    datadir.mkdir()
    state = ClusterState(
        name="ext",
        platform="local",
        port=5433,
        repository=f"file://{tmp_path}/repo",
        bindir="/usr/lib/postgresql/15/bin",
        os_user="postgres",
        registered=True,
        pgdata=str(datadir),
        home=str(tmp_path),
    )
    assert state.log_file == tmp_path / "clusters" / "ext" / "log" / "postgresql.log"
    (datadir / "current_logfiles").write_text("stderr pglog/postgresql-Sun.log\n")
    assert state.log_file == datadir / "pglog" / "postgresql-Sun.log"
    (datadir / "current_logfiles").write_text(
        "csvlog /var/log/pg/x.csv\nstderr /var/log/pg/x.log\n"
    )
    assert state.log_file == Path("/var/log/pg/x.log")
    state.server_log = "/var/log/postgresql/postgresql-15-ext.log"  # stderr to a file wins
    assert state.log_file == Path(state.server_log)
