"""No input crashes with a traceback; every refusal says what was expected."""

from __future__ import annotations

import re

from hypothesis import example, given, settings
from hypothesis import strategies as st

from pgpitr.errors import InvalidInput
from pgpitr.operations.backup import names as backup_names
from pgpitr.postgres.cluster import validate_name
from pgpitr.repository import RepositoryUrl
from pgpitr.state import NAME_RULE
from tests.conftest import cli

HOSTILE = [
    "my pg",
    "x'; DROP TABLE t; --",
    'a"b',
    "../etc",
    "ünï",
    "a/b",
    "$(reboot)",
    "",
    "-rf",
    "A",
    "a" * 49,
    "pg\n",
]


@settings(max_examples=300, deadline=None)
@given(st.text())
@example("pg\n")  # `$` matches before a trailing newline: the rule must match the whole text
@example("my-pg")
def test_cluster_names_are_accepted_by_the_rule_or_refused_with_it(name: str) -> None:
    try:
        validate_name(name)
    except InvalidInput as exc:
        assert "lower-case letters, digits and '-'" in str(exc)
        return
    assert NAME_RULE.fullmatch(name)
    assert re.fullmatch(r"[a-z0-9-]+", name), "only path- and SQL-safe characters pass"


@settings(max_examples=300, deadline=None)
@given(st.text())
@example("backup-1\n")
def test_backup_names_and_repository_urls_never_crash(text: str) -> None:
    try:
        backup_names.validate_name(text)
        assert re.fullmatch(r"[a-z0-9][a-z0-9.-]*[a-z0-9]", text)
    except InvalidInput as exc:
        assert "lower-case letters" in str(exc)
    try:
        RepositoryUrl.parse(text)
    except InvalidInput as exc:
        assert exc.message


def test_hostile_cluster_names_are_refused_by_every_command(home) -> None:
    for name in HOSTILE:
        for args in (
            ["cluster", "create", name],
            ["cluster", "describe", name],
            ["cluster", "restore", "ok-name", "--source-cluster", name],
        ):
            result = cli(*args, check=False)
            assert result.returncode == 2, (args, result.stderr)
            # a leading '-' may be read as an option by the command-line parser: also a refusal
            expected = (
                ("invalid cluster name", "No such option")
                if name.startswith("-")
                else ("invalid cluster name",)
            )
            assert any(e in result.stderr for e in expected), result.stderr
            assert "Traceback" not in result.stderr
    assert not (home / "clusters").exists() or not any((home / "clusters").iterdir())


def test_bad_restore_targets_are_refused_by_the_cli_before_any_flow(home) -> None:
    base = ["cluster", "restore", "new-pg", "--source-cluster", "my-pg"]
    cases = [
        (["--restore-to-lsn", "0/XYZ"], "cannot read the LSN '0/XYZ'"),
        (["--restore-to-lsn", "16/B374D848/1"], "cannot read the LSN"),
        (["--restore-to-xid", "12a"], "cannot read the transaction id '12a'"),
        (["--restore-to-xid", "1"], "transaction id 1 is out of range"),
        (["--restore-to-name", "x'; DROP TABLE t; --"], "invalid restore point name"),
        (["--restore-to-time", "2023-04-17T19:56:40+15:00"], "beyond ±14:00"),
        (["--restore-to-time", "2023-04-17 19:56:40 Mars/Olympus"], "not a known time zone"),
        (
            ["--restore-to-lsn", "0/3000028", "--restore-to-xid", "745"],
            "--restore-to-lsn (lsn) and --restore-to-xid (xid) were given together",
        ),
        (
            ["--restore-to-time", "latest", "--restore-to-immediate", "--restore-to-name", "p"],
            "--restore-to-name (name) and --restore-to-immediate (immediate)",
        ),
        (["--exclusive"], "nothing to stop before"),
        (["--restore-to-name", "p", "--exclusive"], "a target of kind name"),
    ]
    for args, message in cases:
        result = cli(*base, *args, check=False)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert "flow" not in result.stderr.lower(), "refused before any flow ran"
    for name in ("a/b", "", "x" * 64, "two words", "-x"):
        result = cli("cluster", "create-restore-point", "my-pg", "--name", name, check=False)
        assert result.returncode == 2, (name, result.stderr)
        assert "Traceback" not in result.stderr
    assert not (home / "clusters").exists() or not any((home / "clusters").iterdir())
