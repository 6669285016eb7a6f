"""pgpitr/postgres/conf.py: the archive and restore commands, the managed settings and files, and
the stripping of postgresql.auto.conf (real files in a temporary directory, no server)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pgpitr.postgres import conf

HOME = Path("/var/lib/pg pitr")  # a space: the commands must quote it for the shell


# -- quoting -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, "on"),
        (False, "off"),
        (5432, "5432"),
        (0, "0"),
        (1.5, "1.5"),
        ("127.0.0.1", "'127.0.0.1'"),
        ("it's", "'it''s'"),
        ("", "''"),
        ("%m [%p] ", "'%m [%p] '"),
    ],
)
def test_quote_renders_postgresql_conf_values(value, expected: str) -> None:
    assert conf.quote(value) == expected


# -- the WAL commands ----------------------------------------------------------------------------


def test_wal_command_runs_this_interpreter_isolated_with_the_home_and_cluster() -> None:
    command = conf.wal_command(HOME, "wal-push", "my-pg", "%p")
    assert shlex.split(command) == [
        sys.executable,
        "-I",
        "-m",
        "pgpitr",
        "--home",
        "/var/lib/pg pitr",
        "wal-push",
        "--cluster",
        "my-pg",
        "%p",
    ]
    assert "'/var/lib/pg pitr'" in command


def test_archive_command_off_is_true() -> None:
    assert conf.archive_command(HOME, "my-pg", enabled=False) == "/bin/true" == conf.ARCHIVE_OFF


def test_archive_command_tests_the_marks_in_the_clusters_spool_then_pushes() -> None:
    command = conf.archive_command(HOME, "my-pg", enabled=True)
    push = conf.wal_command(HOME, "wal-push", "my-pg", "%p")
    assert command.startswith("s='/var/lib/pg pitr/clusters/my-pg/spool'; f=%f; ")
    assert command.endswith(f" || {push}")
    assert conf.pushed_marker_dir(HOME, "my-pg") == HOME / "clusters/my-pg/spool/pushed"


def test_restore_command_renames_a_fetched_segment_in_or_fetches() -> None:
    spooled = "'/var/lib/pg pitr/clusters/my-pg/spool/fetched'/%f"
    fetch = conf.wal_command(HOME, "wal-fetch", "my-pg", "%f", "%p")
    assert conf.restore_command(HOME, "my-pg") == (
        f"{{ test -e {spooled} && mv {spooled} %p; }} || {fetch}"
    )
    assert fetch.endswith(" wal-fetch --cluster my-pg %f %p")
    assert conf.fetched_spool_dir(HOME, "my-pg") == HOME / "clusters/my-pg/spool/fetched"


def _as_postgres_would(
    command: str, tmp_path: Path, **percent: str
) -> subprocess.CompletedProcess[str]:
    """Run a command the way PostgreSQL does: %-placeholders replaced, through /bin/sh."""
    for key, value in percent.items():
        command = command.replace(f"%{key}", value)
    return subprocess.run(
        ["/bin/sh", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )


def test_archive_commands_shell_test_consumes_the_marker_without_starting_python(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home dir"
    marker = conf.pushed_marker_dir(home, "c1") / "000000010000000000000003"
    marker.parent.mkdir(parents=True)
    marker.touch()
    # the home has no cluster: were wal-push started, it would fail
    command = conf.archive_command(home, "c1", enabled=True)
    done = _as_postgres_would(command, tmp_path, p="pg_wal/x", f="000000010000000000000003")
    assert done.returncode == 0, done.stderr
    assert not marker.exists()
    again = _as_postgres_would(command, tmp_path, p="pg_wal/x", f="000000010000000000000003")
    assert again.returncode != 0  # no marker now: wal-push ran, and found no cluster c1
    assert "c1" in again.stderr
    # no worker held the lock: the shell neither asked for the file nor waited for it
    assert not (conf.spool_dir(home, "c1") / conf.PUSH_ASKED).exists()


def _push_spool(home: Path) -> Path:
    spool = conf.spool_dir(home, "c1")
    for name in (conf.PUSHED, conf.PUSH_FAILED, conf.PUSH_ASKED):
        (spool / name).mkdir(parents=True)
    return spool


def _worker_holding_the_lock(
    spool: Path, then: str, accepting: bool = True
) -> subprocess.Popen[str]:
    """A stand-in for the push worker: holds the lock (taking files, ``spool/push-accepting``,
    or not: compacting, exiting), then runs THEN (a shell command) once the file was asked for,
    and lets go of the lock when told (stdin closed), or at once when the file is not asked for
    within a minute."""
    if accepting:
        (spool / conf.PUSH_ACCEPTING).touch()
    script = (
        "import fcntl, os, subprocess, sys, time\n"
        f"fd = os.open({str(spool / conf.PUSH_LOCK)!r}, os.O_RDWR | os.O_CREAT, 0o600)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        f"asked = {str(spool / conf.PUSH_ASKED / SEGMENT)!r}\n"
        "deadline = time.monotonic() + 60\n"
        "while not os.path.exists(asked):\n"
        "    if time.monotonic() > deadline:\n"
        "        sys.exit('never asked')\n"
        "    time.sleep(0.01)\n"
        f"subprocess.run({then!r}, shell=True, check=True)\n"
        "sys.stdin.read()\n"
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert worker.stdout is not None and worker.stdout.readline() == "held\n"
    return worker


SEGMENT = "000000010000000000000007"


def _archive_beside(
    worker: subprocess.Popen[str], home: Path, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """The archive_command, run as PostgreSQL runs it for SEGMENT while WORKER runs; the worker
    is told to let go of its lock after."""
    try:
        command = conf.archive_command(home, "c1", enabled=True)
        return _as_postgres_would(command, tmp_path, p=f"pg_wal/{SEGMENT}", f=SEGMENT)
    finally:
        worker.communicate("")


def test_while_the_worker_runs_the_shell_waits_for_the_files_mark_without_starting_python(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home dir"
    spool = _push_spool(home)
    marker = spool / conf.PUSHED / SEGMENT
    # the worker marks the file stored only after the shell asked for it: the shell waited
    worker = _worker_holding_the_lock(spool, f"touch {shlex.quote(str(marker))}")
    done = _archive_beside(worker, home, tmp_path)
    assert worker.returncode == 0
    # the home has no cluster c1: a wal-push started would have failed
    assert done.returncode == 0, done.stderr
    assert not marker.exists()


def test_a_failure_mark_sends_the_waiting_shell_to_wal_push(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a wait longer than _as_postgres_would's timeout: only the failure mark ends it in time
    monkeypatch.setattr(conf, "SHELL_WAIT_SECONDS", 3600)
    home = tmp_path / "home dir"
    spool = _push_spool(home)
    failure = spool / conf.PUSH_FAILED / SEGMENT
    worker = _worker_holding_the_lock(
        spool, f"echo 'the repository said no' > {shlex.quote(str(failure))}"
    )
    done = _archive_beside(worker, home, tmp_path)
    assert done.returncode != 0
    assert "c1" in done.stderr  # wal-push ran (and found no cluster c1)


def test_restore_commands_shell_test_moves_the_spooled_segment_into_place(tmp_path: Path) -> None:
    home = tmp_path / "home dir"
    spooled = conf.fetched_spool_dir(home, "c1") / "000000010000000000000009"
    spooled.parent.mkdir(parents=True)
    spooled.write_bytes(b"segment bytes")
    (tmp_path / "pg_wal").mkdir()
    command = conf.restore_command(home, "c1")
    done = _as_postgres_would(
        command, tmp_path, f="000000010000000000000009", p="pg_wal/RECOVERYXLOG"
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "pg_wal" / "RECOVERYXLOG").read_bytes() == b"segment bytes"
    assert not spooled.exists()


# -- managed settings and files -----------------------------------------------------------------


def test_managed_settings() -> None:
    settings = conf.managed_settings(
        port=5499, socket_dir=Path("/run/x"), archive="/bin/true", archive_timeout=30
    )
    assert settings == {
        "port": 5499,
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": "/run/x",
        "unix_socket_permissions": "0700",
        "wal_level": "replica",
        "archive_mode": "on",
        "archive_command": "/bin/true",
        "restore_command": "",
        "archive_cleanup_command": "",
        "recovery_end_command": "",
        "ssl_passphrase_command": "",
        "primary_conninfo": "",
        "primary_slot_name": "",
        "archive_timeout": 30,
        "max_wal_senders": 10,
        "password_encryption": "scram-sha-256",
        "logging_collector": False,
        "log_line_prefix": "%m [%p] ",
    }
    default = conf.managed_settings(port=1, socket_dir=Path("/s"), archive="a")
    assert default["archive_timeout"] == 60


def test_render_writes_one_quoted_line_per_setting_after_a_header() -> None:
    text = conf.render({"port": 5432, "archive_command": "echo 'x'", "logging_collector": False})
    assert text == (
        "# Managed by pgpitr; edits here are overwritten. Use ALTER SYSTEM for the rest.\n"
        "port = 5432\n"
        "archive_command = 'echo ''x'''\n"
        "logging_collector = off\n"
    )


def test_recovery_settings_for_each_kind_of_target() -> None:
    header = conf.render({})
    to_time = conf.recovery("RESTORE", time="2026-01-02 03:04:05+00")
    assert to_time == header + (
        "restore_command = 'RESTORE'\n"
        "recovery_target_timeline = 'latest'\n"
        "recovery_target_time = '2026-01-02 03:04:05+00'\n"
        "recovery_target_action = 'promote'\n"
    )
    to_lsn = conf.recovery("RESTORE", lsn="0/3000028", inclusive=False)
    assert to_lsn.endswith(
        "recovery_target_lsn = '0/3000028'\n"
        "recovery_target_inclusive = off\n"
        "recovery_target_action = 'promote'\n"
    )
    assert "recovery_target_xid = '745'\n" in conf.recovery("RESTORE", xid=745)
    named = conf.recovery("RESTORE", name="before 'x'")
    assert "recovery_target_name = 'before ''x'''\n" in named
    immediate = conf.recovery("RESTORE", immediate=True)
    assert "recovery_target = 'immediate'\nrecovery_target_action = 'promote'\n" in immediate
    assert "inclusive" not in to_time + immediate  # PostgreSQL's default: on
    with pytest.raises(ValueError, match="recovery_target_time, recovery_target_lsn"):
        conf.recovery("RESTORE", time="2026-01-02 03:04:05+00", lsn="0/3000028")
    latest = conf.recovery("RESTORE")
    assert latest == header + ("restore_command = 'RESTORE'\nrecovery_target_timeline = 'latest'\n")


def test_hba_allows_only_peer_on_the_socket_and_scram_on_loopback() -> None:
    lines = [line.split() for line in conf.hba().splitlines() if not line.startswith("#")]
    assert lines == [
        ["local", "all", "all", "peer", "map=pgpitr"],
        ["local", "replication", "all", "peer", "map=pgpitr"],
        ["host", "all", "all", "127.0.0.1/32", "scram-sha-256"],
        ["host", "replication", "all", "127.0.0.1/32", "scram-sha-256"],
    ]
    assert "trust" not in conf.hba()


def test_ident_maps_each_os_user_once_in_order() -> None:
    assert conf.ident(["root", "postgres", "root"], superuser="admin") == (
        "# Managed by pgpitr: who may administer the cluster over its socket.\n"
        "pgpitr  root  admin\n"
        "pgpitr  postgres  admin\n"
    )


def test_write_file_replaces_atomically_with_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "pgpitr.conf"
    path.write_text("old\n")
    conf.write_file(path, "new\n", None, mode=0o640)
    assert path.read_text() == "new\n"
    assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pgpitr.conf"]  # no temporary left
    conf.write_file(path, "owned\n", (os.getuid(), os.getgid()))
    assert (path.stat().st_uid, path.stat().st_gid) == (os.getuid(), os.getgid())
    assert path.stat().st_mode & 0o777 == 0o600  # the default mode


def test_ensure_include_appends_the_includes_once(tmp_path: Path) -> None:
    main = tmp_path / "postgresql.conf"
    main.write_text("shared_buffers = 128MB\n\n\n")
    conf.ensure_include(tmp_path, None)
    expected = (
        "shared_buffers = 128MB\n"
        "\n"
        "include 'pgpitr.conf'\n"
        "include_if_exists 'pgpitr-recovery.conf'\n"
    )
    assert main.read_text() == expected
    conf.ensure_include(tmp_path, None)
    assert main.read_text() == expected


def test_ensure_include_moves_what_follows_the_includes_before_them(tmp_path: Path) -> None:
    main = tmp_path / "postgresql.conf"
    main.write_text(
        "shared_buffers = 128MB\n"
        "include 'pgpitr.conf'\n"
        "include_if_exists 'pgpitr-recovery.conf'\n"
        "archive_cleanup_command = 'pg_archivecleanup /shared/archive %r'\n"
    )
    conf.ensure_include(tmp_path, None)
    assert main.read_text() == (
        "shared_buffers = 128MB\n"
        "archive_cleanup_command = 'pg_archivecleanup /shared/archive %r'\n"
        "\n"
        "include 'pgpitr.conf'\n"
        "include_if_exists 'pgpitr-recovery.conf'\n"
    )


def test_managed_settings_pin_every_command_setting() -> None:
    settings = conf.managed_settings(port=1, socket_dir=Path("/s"), archive="pgpitr's")
    assert {k: settings[k] for k in conf.COMMAND_SETTINGS} == {
        "archive_command": "pgpitr's",
        "restore_command": "",
        "archive_cleanup_command": "",
        "recovery_end_command": "",
        "ssl_passphrase_command": "",
    }


# -- postgresql.auto.conf ------------------------------------------------------------------------


def test_strip_auto_conf_removes_only_the_settings_pgpitr_owns(tmp_path: Path) -> None:
    auto = tmp_path / "postgresql.auto.conf"
    auto.write_text(
        "# Do not edit this file manually!\n"
        "# It will be overwritten by the ALTER SYSTEM command.\n"
        "work_mem = '64MB'\n"
        "archive_command = 'cp %p /elsewhere/%f'\n"
        "Port=5999\n"
        "  restore_command = 'cp /x/%f %p'\n"
        "recovery_target_time = '2020-01-01'\n"
        "archive_timeout = '5min'\n"
        "shared_preload_libraries = 'pg_stat_statements'\n"
    )
    removed = conf.strip_auto_conf(tmp_path, None)
    assert removed == [
        "archive_command = 'cp %p /elsewhere/%f'",
        "Port=5999",
        "  restore_command = 'cp /x/%f %p'",
        "recovery_target_time = '2020-01-01'",
    ]
    assert auto.read_text() == (
        "# Do not edit this file manually!\n"
        "# It will be overwritten by the ALTER SYSTEM command.\n"
        "work_mem = '64MB'\n"
        "archive_timeout = '5min'\n"
        "shared_preload_libraries = 'pg_stat_statements'\n"
    )


def test_strip_auto_conf_leaves_a_file_without_owned_settings_untouched(tmp_path: Path) -> None:
    auto = tmp_path / "postgresql.auto.conf"
    auto.write_text("work_mem = '64MB'")  # no final newline: not rewritten, so kept as it is
    before = auto.stat().st_mtime_ns, auto.stat().st_ino
    assert conf.strip_auto_conf(tmp_path, None) == []
    assert auto.read_text() == "work_mem = '64MB'"
    assert (auto.stat().st_mtime_ns, auto.stat().st_ino) == before


def test_strip_auto_conf_removes_every_command_setting_even_one_pgpitr_does_not_know(
    tmp_path: Path,
) -> None:
    auto = tmp_path / "postgresql.auto.conf"
    auto.write_text(
        "archive_cleanup_command = 'pg_archivecleanup /shared/archive %r'\n"
        "recovery_end_command = 'rm -rf /shared'\n"
        "ssl_passphrase_command = 'echo x'\n"
        "some_future_command = 'x'\n"
        "command_timeout = 5\n"
    )
    assert len(conf.strip_auto_conf(tmp_path, None)) == 4
    assert auto.read_text() == "command_timeout = 5\n"


def test_strip_auto_conf_without_the_file_removes_nothing(tmp_path: Path) -> None:
    assert conf.strip_auto_conf(tmp_path, None) == []
    assert not (tmp_path / "postgresql.auto.conf").exists()


def test_every_owned_setting_is_stripped(tmp_path: Path) -> None:
    auto = tmp_path / "postgresql.auto.conf"
    auto.write_text("".join(f"{name} = 'x'\n" for name in conf.OWNED_SETTINGS) + "keep = 1\n")
    removed = conf.strip_auto_conf(tmp_path, None)
    assert len(removed) == len(conf.OWNED_SETTINGS) == 17
    assert auto.read_text() == "keep = 1\n"


def test_set_managed_changes_one_setting_and_keeps_the_others(tmp_path) -> None:
    from pgpitr.postgres import conf as c

    settings = c.managed_settings(port=5433, socket_dir=tmp_path, archive="true")
    (tmp_path / c.MANAGED).write_text(c.render(settings))
    c.set_managed(tmp_path, None, port=6001)
    text = (tmp_path / c.MANAGED).read_text()
    assert "port = 6001" in text and "port = 5433" not in text
    expected = c.render({**settings, "port": 6001})
    assert text == expected


def test_a_worker_that_no_longer_takes_files_sends_the_shell_to_wal_push(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker holds its lock while it compacts the index and exits, but takes no more files
    then: the shell does not wait for it (an hour here: only that check ends it in time)."""
    monkeypatch.setattr(conf, "SHELL_WAIT_SECONDS", 3600)
    home = tmp_path / "home dir"
    spool = _push_spool(home)
    worker = _worker_holding_the_lock(spool, "true", accepting=False)
    done = _archive_beside(worker, home, tmp_path)
    assert done.returncode != 0
    assert "c1" in done.stderr  # wal-push ran (and found no cluster c1)
