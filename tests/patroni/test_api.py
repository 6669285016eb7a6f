"""The Patroni REST API's address and credentials, checked where they enter (no server)."""

from __future__ import annotations

import pytest

from pgpitr.errors import InvalidInput
from pgpitr.patroni.api import PASSWORD_ENV, USERNAME_ENV, Credentials, parse_url


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8008", "http://127.0.0.1:8008"),
        ("http://127.0.0.1:8008/", "http://127.0.0.1:8008"),
        ("10.0.0.5:8008", "http://10.0.0.5:8008"),
        ("https://pg-1.example:8443", "https://pg-1.example:8443"),
        ("http://[::1]:8008", "http://[::1]:8008"),
    ],
)
def test_an_address_is_normalised(given: str, expected: str) -> None:
    assert parse_url(given) == expected


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("ftp://127.0.0.1:8008", "not a Patroni REST API address"),
        ("http://", "not a Patroni REST API address"),
        ("http://127.0.0.1:8008/cluster", "has a path"),
        ("http://127.0.0.1:99999", "invalid port"),
    ],
)
def test_a_bad_address_is_refused(given: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=why):
        parse_url(given)


def test_credentials_in_the_address_are_refused_and_not_echoed() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_url("http://patroni:s3cret-pass@127.0.0.1:8008")
    assert "s3cret-pass" not in str(caught.value)
    assert USERNAME_ENV in str(caught.value)


def test_credentials_come_from_patronis_own_variables(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(USERNAME_ENV, raising=False)
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    assert Credentials.from_environment() is None
    monkeypatch.setenv(USERNAME_ENV, "patroni")
    with pytest.raises(InvalidInput, match="both"):
        Credentials.from_environment()
    monkeypatch.setenv(PASSWORD_ENV, "s3cret-pass")
    found = Credentials.from_environment()
    assert found is not None and "s3cret-pass" not in repr(found)
    path = tmp_path / "patroni-credentials"
    found.save(path, owner=None)
    assert path.stat().st_mode & 0o777 == 0o600
    assert Credentials.load(path) == found
    assert Credentials.load(tmp_path / "none") is None
