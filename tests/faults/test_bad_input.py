"""No input crashes with a traceback; every refusal says what was expected."""

from __future__ import annotations

import re

from hypothesis import example, given, settings
from hypothesis import strategies as st

from pgpitr import backup as bk
from pgpitr.errors import InvalidInput
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
        bk.validate_name(text)
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
