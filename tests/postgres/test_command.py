"""The argv builders of pgpitr/postgres/command.py (nothing is run: each option maps to its flag)
and the gateway's error (run against /bin/sh, no PostgreSQL)."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from pgpitr.errors import CommandError
from pgpitr.postgres import command
from pgpitr.postgres.command import (
    OsUser,
    amcheck_command,
    basebackup_command,
    client_options,
    controldata_command,
    initdb_command,
    pg_ctl_command,
    psql_command,
    receivewal_command,
    verifybackup_command,
    waldump_command,
)

BINDIR = Path("/opt/pg 15/bin")  # a space: argv elements are never split or shell-quoted
DATADIR = Path("/srv/it's here/data")


def flag(argv: list[str], name: str) -> str:
    """The value that follows ``name`` (which must appear exactly once)."""
    assert argv.count(name) == 1, (name, argv)
    return argv[argv.index(name) + 1]


# -- initdb --------------------------------------------------------------------------------------


def test_initdb_command_is_the_full_argv() -> None:
    assert initdb_command(BINDIR, DATADIR) == [
        "/opt/pg 15/bin/initdb",
        "--pgdata",
        "/srv/it's here/data",
        "--username",
        "postgres",
        "--auth-local",
        "peer",
        "--auth-host",
        "scram-sha-256",
        "--encoding",
        "UTF8",
        "--locale",
        "C.UTF-8",
        "--data-checksums",
    ]


def test_initdb_command_takes_the_superuser() -> None:
    argv = initdb_command(BINDIR, DATADIR, superuser="admin")
    assert flag(argv, "--username") == "admin"
    assert "postgres" not in argv


# -- pg_ctl --------------------------------------------------------------------------------------


def test_pg_ctl_start_waits_and_logs_but_has_no_mode() -> None:
    log = Path("/var/log/pg one.log")
    argv = pg_ctl_command(BINDIR, "start", DATADIR, log=log, timeout=45)
    assert argv == [
        "/opt/pg 15/bin/pg_ctl",
        "start",
        "--pgdata",
        "/srv/it's here/data",
        "--silent",
        "--wait",
        "--timeout",
        "45",
        "--log",
        "/var/log/pg one.log",
    ]


def test_pg_ctl_start_without_a_log_has_no_log_flag() -> None:
    argv = pg_ctl_command(BINDIR, "start", DATADIR)
    assert "--log" not in argv
    assert flag(argv, "--timeout") == "120"  # the default


def test_pg_ctl_stop_takes_the_mode_and_ignores_the_log() -> None:
    argv = pg_ctl_command(BINDIR, "stop", DATADIR, log=Path("/l"), mode="immediate", timeout=7)
    assert argv == [
        "/opt/pg 15/bin/pg_ctl",
        "stop",
        "--pgdata",
        "/srv/it's here/data",
        "--silent",
        "--wait",
        "--timeout",
        "7",
        "--mode",
        "immediate",
    ]
    assert flag(pg_ctl_command(BINDIR, "stop", DATADIR), "--mode") == "fast"  # the default


def test_pg_ctl_restart_has_wait_log_and_mode() -> None:
    argv = pg_ctl_command(BINDIR, "restart", DATADIR, log=Path("/l.log"), mode="smart")
    assert argv[:5] == ["/opt/pg 15/bin/pg_ctl", "restart", "--pgdata", str(DATADIR), "--silent"]
    assert "--wait" in argv
    assert flag(argv, "--timeout") == "120"
    assert flag(argv, "--log") == "/l.log"
    assert flag(argv, "--mode") == "smart"


@pytest.mark.parametrize("action", ["status", "promote", "reload"])
def test_pg_ctl_other_actions_neither_wait_nor_log_nor_take_a_mode(action: str) -> None:
    argv = pg_ctl_command(BINDIR, action, DATADIR, log=Path("/l"), mode="immediate", timeout=9)
    assert argv == ["/opt/pg 15/bin/pg_ctl", action, "--pgdata", str(DATADIR), "--silent"]


# -- pg_basebackup -------------------------------------------------------------------------------


SOCKET = Path("/run/pg sock")


def _basebackup(**kwargs) -> list[str]:
    return basebackup_command(BINDIR, SOCKET, 5433, label="backup-1", **kwargs)


def test_basebackup_command_streams_one_tar_to_stdout() -> None:
    argv = _basebackup(include_wal=False)
    assert argv[0] == "/opt/pg 15/bin/pg_basebackup"
    assert flag(argv, "--host") == "/run/pg sock"
    assert flag(argv, "--port") == "5433"
    assert flag(argv, "--username") == "postgres"
    assert flag(argv, "--pgdata") == "-"
    assert flag(argv, "--format") == "tar"
    assert flag(argv, "--checkpoint") == "fast"
    assert flag(argv, "--manifest-checksums") == "CRC32C"
    assert flag(argv, "--label") == "backup-1"
    for bare in ("--no-password", "--verbose", "--progress"):
        assert argv.count(bare) == 1, bare
    assert len(argv) == 1 + 2 * 10 + 3  # the program, ten flags with a value, three without


def test_basebackup_wal_method_follows_include_wal() -> None:
    assert flag(_basebackup(include_wal=False), "--wal-method") == "none"
    assert flag(_basebackup(include_wal=True), "--wal-method") == "fetch"


@pytest.mark.parametrize(
    ("level", "workers", "expected"),
    [
        (3, 2, "client-zstd:level=3,workers=2"),  # the defaults
        (9, 4, "client-zstd:level=9,workers=4"),
        (1, 1, "client-zstd:level=1"),  # one worker: no workers option
        (0, 4, "none"),  # level 0: uncompressed, workers are irrelevant
    ],
)
def test_basebackup_compression(level: int, workers: int, expected: str) -> None:
    argv = _basebackup(include_wal=False, compress_level=level, workers=workers)
    assert flag(argv, "--compress") == expected


def test_basebackup_defaults_are_zstd_3_with_two_workers() -> None:
    assert flag(_basebackup(include_wal=True), "--compress") == "client-zstd:level=3,workers=2"


def test_basebackup_takes_the_superuser() -> None:
    argv = _basebackup(include_wal=False, superuser="backup")
    assert flag(argv, "--username") == "backup"


# -- pg_waldump ----------------------------------------------------------------------------------


def test_waldump_command_reads_transactions_of_one_timeline() -> None:
    segment = Path("/tmp/wal dir/000000030000000000000007")
    assert waldump_command(BINDIR, segment, timeline=3) == [
        "/opt/pg 15/bin/pg_waldump",
        "--rmgr",
        "Transaction",
        "--timeline",
        "3",
        "/tmp/wal dir/000000030000000000000007",
    ]


# -- the client programs: psql, pg_amcheck ---------------------------------------------------------


def test_client_options_name_host_port_and_user_and_no_password() -> None:
    assert client_options(Path("/run/pg sock"), 5433, "app") == [
        "--host",
        "/run/pg sock",
        "--port",
        "5433",
        "--username",
        "app",
    ]


def test_psql_command_opens_the_database_with_the_connection() -> None:
    connection = client_options("127.0.0.1", 5433, "app")
    assert psql_command(BINDIR, connection, "shop") == [
        "/opt/pg 15/bin/psql",
        *connection,
        "--dbname",
        "shop",
    ]


def test_amcheck_command_checks_every_database_without_a_password_prompt() -> None:
    connection = client_options("/run/pg", 5433, "postgres")
    argv = amcheck_command(BINDIR, connection)
    assert argv[0] == "/opt/pg 15/bin/pg_amcheck"
    assert {"--all", "--heapallindexed", "--install-missing", "--no-password"} <= set(argv)
    assert argv[-len(connection) :] == connection


# -- pg_controldata, pg_verifybackup -------------------------------------------------------------


def test_controldata_command_reads_the_data_directory() -> None:
    assert controldata_command(BINDIR, DATADIR) == [
        "/opt/pg 15/bin/pg_controldata",
        "-D",
        "/srv/it's here/data",
    ]


def test_verifybackup_command_reads_the_wal_of_the_backup_itself_by_default() -> None:
    assert verifybackup_command(BINDIR, Path("/w/data")) == [
        "/opt/pg 15/bin/pg_verifybackup",
        "--quiet",
        "/w/data",
    ]


def test_verifybackup_command_takes_the_fetched_wal_directory() -> None:
    assert verifybackup_command(BINDIR, Path("/w/data"), Path("/w/wal")) == [
        "/opt/pg 15/bin/pg_verifybackup",
        "--quiet",
        "--wal-directory",
        "/w/wal",
        "/w/data",
    ]


# -- pg_receivewal -------------------------------------------------------------------------------


def test_receivewal_command_streams_on_the_slot_with_the_receivers_name() -> None:
    argv = receivewal_command(
        Path("/usr/lib/postgresql/15/bin"),
        Path("/spool/stream"),
        {"host": "/run/it's", "port": 5433, "user": "postgres", "dbname": "postgres"},
        slot="pgpitr_stream",
        application_name="pgpitr_walstream",
        synchronous=False,
    )
    assert argv[0] == "/usr/lib/postgresql/15/bin/pg_receivewal"
    assert argv[argv.index("--slot") + 1] == "pgpitr_stream"
    assert argv[argv.index("--directory") + 1] == "/spool/stream"
    dsn = argv[argv.index("--dbname") + 1]
    assert "host='/run/it\\'s'" in dsn and "application_name='pgpitr_walstream'" in dsn
    assert "dbname" not in dsn and "--no-loop" in argv and "--synchronous" not in argv
    synchronous = receivewal_command(
        Path("/b"), Path("/d"), {}, slot="s", application_name="a", synchronous=True
    )
    assert synchronous[-1] == "--synchronous"


def test_receivewal_command_refuses_a_password() -> None:
    with pytest.raises(ValueError, match="never goes into"):
        receivewal_command(
            Path("/b"),
            Path("/d"),
            {"host": "h", "password": "s3cret"},
            slot="s",
            application_name="a",
            synchronous=False,
        )


# -- the gateway (a shell, no server) ------------------------------------------------------------


def test_run_raises_command_error_with_the_programs_stderr() -> None:
    argv = ["/bin/sh", "-c", "echo first >&2; echo 'it broke' >&2; exit 3"]
    with pytest.raises(CommandError) as info:
        command.run(argv)
    assert info.value.returncode == 3
    assert info.value.argv == argv
    assert info.value.stderr == "first\nit broke\n"
    assert str(info.value) == "sh exited with code 3:\n    first\n    it broke"


def test_run_without_check_returns_the_result() -> None:
    result = command.run(["/bin/sh", "-c", "echo out; exit 4"], check=False)
    assert (result.returncode, result.stdout) == (4, "out\n")


def test_run_passes_input_env_and_stringifies_paths(tmp_path: Path) -> None:
    result = command.run(
        [Path("/bin/sh"), "-c", 'cat; printf "%s" "$PGPITR_TEST_VALUE"; echo " $LC_ALL"'],
        input=b"from stdin|",
        env={"PGPITR_TEST_VALUE": "given", "LC_ALL": "C"},
        cwd=tmp_path,
    )
    assert result.stdout == "from stdin|given C\n"


def test_run_sets_a_utf8_locale_when_none_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LC_ALL", raising=False)
    result = command.run(["/bin/sh", "-c", 'echo "$LC_ALL"'])
    assert result.stdout == "C.UTF-8\n"


def test_a_missing_program_is_a_command_error_127(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-program")
    with pytest.raises(CommandError) as info:
        command.run([missing, "--version"])
    assert info.value.returncode == 127
    assert f"{missing}: not found" in info.value.stderr
    with pytest.raises(CommandError) as streamed:
        command.popen([missing])
    assert streamed.value.returncode == 127


def test_a_program_that_runs_too_long_is_a_command_error() -> None:
    with pytest.raises(CommandError) as info:
        command.run(["/bin/sleep", "30"], timeout=0.2)
    assert info.value.returncode == -1
    assert "timed out after 0.2 s" in info.value.stderr


def test_popen_streams_and_check_raises_with_the_given_stderr() -> None:
    argv = ["/bin/sh", "-c", "printf streamed; exit 2"]
    process = command.popen(argv)
    out, err = process.communicate(timeout=30)
    assert out == b"streamed"
    with pytest.raises(CommandError) as info:
        command.check(process, argv, "told by the caller")
    assert info.value.returncode == 2 and info.value.stderr == "told by the caller"
    ok = command.popen(["/bin/true"])
    ok.wait(timeout=30)
    command.check(ok, ["/bin/true"], "")  # exit 0: no error


def test_os_user_is_self_only_for_this_process_uid() -> None:
    assert OsUser("me", os.geteuid(), os.getegid()).is_self
    assert not OsUser("other", os.geteuid() + 1, 0).is_self


def test_a_command_for_another_os_user_gets_its_identity_and_home() -> None:
    nobody = pwd.getpwnam("nobody")
    user = OsUser("nobody", nobody.pw_uid, nobody.pw_gid)
    assert command._identity(user) == {
        "user": nobody.pw_uid,
        "group": nobody.pw_gid,
        "extra_groups": [],
    }
    env = command._env(user, {"PGPITR_TEST_VALUE": "1"})
    assert env["HOME"] == nobody.pw_dir
    assert env["USER"] == env["LOGNAME"] == "nobody"
    assert env["PGPITR_TEST_VALUE"] == "1"
    assert command._identity(None) == {}
    assert command._identity(OsUser("me", os.geteuid(), os.getegid())) == {}


@pytest.mark.root  # only root can run a program as another user
def test_run_as_another_os_user_runs_with_its_uid() -> None:
    nobody = pwd.getpwnam("nobody")
    user = OsUser("nobody", nobody.pw_uid, nobody.pw_gid)
    result = command.run(["/bin/sh", "-c", 'id -u; echo "$USER"'], user=user, cwd="/")
    assert result.stdout == f"{nobody.pw_uid}\nnobody\n"


def test_no_program_inherits_the_clis_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in command.SECRET_ENV:
        monkeypatch.setenv(name, f"secret-{name}")
    monkeypatch.setenv("PGPITR_TEST_VALUE", "kept")
    shown = command.run(["/usr/bin/env"]).stdout
    assert "secret-" not in shown and "PGPITR_TEST_VALUE=kept" in shown
    # a secret a caller hands over on purpose is passed
    given = command.run(["/usr/bin/env"], env={"PGPASSWORD": "on-purpose"}).stdout
    assert "PGPASSWORD=on-purpose" in given and "secret-" not in given
