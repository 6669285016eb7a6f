"""Patroni's REST API, as pgpitr uses it: who the members are and which one is primary
(``GET /cluster``), the dynamic configuration (``GET``/``PATCH /config``) and a member's restart
(``POST /restart``).

Plain ``urllib`` (the WAL commands never come here, but describe does, and it must start fast).
The API's credentials (``restapi.authentication``: Patroni asks for them on every request that
changes something) are sent as HTTP basic authentication and never appear in a URL, a message or
a log line; a URL that carries them is refused.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgpitr.errors import ClusterStateError, InvalidInput
from pgpitr.osutil import read_private, write_atomic

#: The environment variables Patroni's own configuration reads its REST API credentials from;
#: ``cluster register --patroni`` takes them from there (never from argv).
USERNAME_ENV = "PATRONI_RESTAPI_USERNAME"
PASSWORD_ENV = "PATRONI_RESTAPI_PASSWORD"
#: Seconds a request may take: every member answers from memory (its last DCS view).
TIMEOUT = 5.0


def parse_url(text: str) -> str:
    """A member's REST API base URL (http or https, a host, no path), without a trailing
    slash; credentials in it are refused."""
    raw = (text or "").strip()
    parts = urllib.parse.urlsplit(raw if "://" in raw else f"http://{raw}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(
            f"{text!r} is not a Patroni REST API address: expected http://HOST:PORT (e.g. "
            "http://10.0.0.5:8008)"
        )
    if parts.username or parts.password:
        raise InvalidInput(
            "the Patroni REST API address carries credentials: pass them in "
            f"{USERNAME_ENV} and {PASSWORD_ENV} instead (an address is shown and logged)"
        )
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise InvalidInput(
            f"{text!r} has a path or a query: give the REST API's base address (http://HOST:PORT)"
        )
    try:
        port = parts.port
    except ValueError:
        raise InvalidInput(f"{text!r} has an invalid port") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    @classmethod
    def from_environment(cls) -> Credentials | None:
        username, password = os.environ.get(USERNAME_ENV), os.environ.get(PASSWORD_ENV)
        if not username and not password:
            return None
        if not username or not password:
            raise InvalidInput(
                f"set both {USERNAME_ENV} and {PASSWORD_ENV} (the REST API's "
                "restapi.authentication), or neither"
            )
        return cls(username, password)

    def save(self, path: Path, owner: tuple[int, int] | None) -> None:
        text = json.dumps({"username": self.username, "password": self.password})
        write_atomic(path, text, mode=0o600, owner=owner)

    @classmethod
    def load(cls, path: Path) -> Credentials | None:
        try:
            data = json.loads(read_private(path))
        except FileNotFoundError:
            return None
        return cls(data["username"], data["password"])

    def header(self) -> str:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"


class _Unreachable(ClusterStateError):
    """A member's REST API did not answer at all (another member's may)."""


class PatroniApi:
    """One member's REST API (any member answers for the whole cluster): a request of the
    whole cluster's goes to the next of ``others`` (the other members' APIs) when a member's
    does not answer, as when that member's node crashed."""

    def __init__(
        self, url: str, credentials: Credentials | None = None, others: Sequence[str] = ()
    ) -> None:
        self.url = url
        self.credentials = credentials
        self.others = [other for other in dict.fromkeys(others) if other and other != url]

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        url: str | None = None,
        timeout: float = TIMEOUT,
    ) -> Any:
        """The JSON answer of METHOD PATH (on ``url``, another member's API, if given)."""
        if url is not None:
            return self._request(method, path, body, url, timeout)
        bases = [self.url, *self.others]
        for base in bases[:-1]:
            try:
                return self._request(method, path, body, base, timeout)
            except _Unreachable:
                continue
        return self._request(method, path, body, bases[-1], timeout)

    def _request(self, method: str, path: str, body: Any, base: str, timeout: float) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{base}{path}", data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.credentials is not None:
            request.add_header("Authorization", self.credentials.header())
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                text = answer.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace").strip()[:300]
            if exc.code in (401, 403):
                raise ClusterStateError(
                    f"Patroni at {base} refused {method} {path}: {exc.code} {exc.reason}",
                    hint=f"set {USERNAME_ENV} and {PASSWORD_ENV} to the REST API's "
                    "restapi.authentication when registering",
                ) from None
            raise ClusterStateError(
                f"Patroni at {base} answered {method} {path} with {exc.code}: "
                f"{detail or exc.reason}",
                transient=exc.code >= 500,
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _Unreachable(
                f"Patroni's REST API at {base} does not answer: {reason}",
                hint="check that Patroni runs and that the address is its restapi.listen "
                "(or connect_address)",
                transient=True,
            ) from None
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except ValueError:
            return text

    def cluster(self) -> dict[str, Any]:
        return self.request("GET", "/cluster")

    def member(self, url: str | None = None) -> dict[str, Any]:
        """``GET /patroni`` of this member (or of ``url``): its role, state, timeline, system
        identifier and whether a restart is pending."""
        return self.request("GET", "/patroni", url=url)

    def config(self) -> dict[str, Any]:
        return self.request("GET", "/config") or {}

    def patch_config(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Merge CHANGES into the dynamic configuration (a None value removes a key)."""
        return self.request("PATCH", "/config", changes) or {}

    def restart(self, member_url: str, timeout: float) -> None:
        """Restart a member's server; Patroni answers once it is back (or gave up)."""
        self.request("POST", "/restart", {}, url=member_url, timeout=timeout)
