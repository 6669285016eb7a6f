"""The Patroni REST API's address and credentials, checked where they enter (no server), and
the next member's API asked when one does not answer (a real HTTP server)."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator

import pytest

from pgpitr.errors import ClusterStateError, InvalidInput
from pgpitr.patroni.api import PASSWORD_ENV, USERNAME_ENV, Credentials, PatroniApi, parse_url


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


class _Member(http.server.BaseHTTPRequestHandler):
    """A member's REST API answering GET /cluster (with STATUS)."""

    status = 200

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = json.dumps({"members": [{"name": "m2", "role": "leader"}]}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def member_api() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Member)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_another_members_api_answers_when_the_registered_one_is_down(member_api: str) -> None:
    down = _closed_port()
    assert PatroniApi(down, others=[down, member_api]).cluster()["members"][0]["name"] == "m2"
    with pytest.raises(ClusterStateError, match="does not answer"):
        PatroniApi(down).cluster()


def test_a_refusal_is_not_passed_over_to_another_member(
    member_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_Member, "status", 401)
    other = _closed_port()
    with pytest.raises(ClusterStateError, match="refused GET /cluster: 401"):
        PatroniApi(member_api, others=[other]).cluster()
