"""Where the Prefect API is, found without importing Prefect (read-only commands stay fast).

In order: PREFECT_API_URL; the active Prefect profile's, unless it is the ``pgpitr`` profile
that pgpitr writes for its own local server; the local server on 127.0.0.1:PGPITR_PREFECT_PORT
(default 4200) when it answers.  ``ensure_api_url`` starts that local server when nothing is
configured and nothing answers (deployments/localserver.py): what a command that needs the API
calls; a read-only command calls ``api_url`` and starts nothing.
"""

from __future__ import annotations

import functools
import os

from deployments import localserver

#: The default local server (the port may be another: PGPITR_PREFECT_PORT).
LOCAL_SERVER = "http://127.0.0.1:4200/api"


@functools.cache
def api_url() -> str | None:
    """The configured Prefect API, or the local server if one answers, else None."""
    explicit = configured_url()
    if explicit:
        _credentials_for(explicit)
        return explicit
    local = localserver.url()
    if not answers(local):
        return None
    localserver.check_trusted(localserver.port())
    localserver.use_credentials()
    return local


def configured_url() -> str | None:
    """PREFECT_API_URL, or the active profile's when it is not pgpitr's own."""
    explicit = os.environ.get("PREFECT_API_URL")
    if not explicit and not localserver.active_profile_is_ours():
        explicit = _profile_setting("PREFECT_API_URL")
    return explicit.rstrip("/") if explicit else None


def ensure_api_url() -> tuple[str, bool]:
    """The API to use; with none configured, the local server, started now if need be.
    (url, whether it was started now)."""
    explicit = configured_url()
    if explicit:
        _credentials_for(explicit)
        return explicit, False
    found, started = localserver.ensure()
    api_url.cache_clear()
    return found, started


def _credentials_for(explicit: str) -> None:
    """The local server named explicitly (the agent's systemd unit does) gets its credentials
    like the one found by default; another API's come from Prefect's own settings."""
    if explicit == localserver.url() and not os.environ.get(localserver.AUTH_ENV):
        localserver.check_trusted(localserver.port())
        localserver.use_credentials()


def answers(url: str, timeout: float = 0.5) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def auth_headers() -> dict[str, str]:
    """The Authorization header Prefect's client would send (PREFECT_API_AUTH_STRING, from the
    environment or the active profile), for the requests made without Prefect."""
    import base64

    secret = os.environ.get(localserver.AUTH_ENV) or _profile_setting(localserver.AUTH_ENV)
    if not secret:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(secret.encode()).decode()}


def _profile_setting(name: str) -> str | None:
    """A setting of the active Prefect profile, read without importing Prefect."""
    data = localserver.read_profiles()
    active = os.environ.get("PREFECT_PROFILE") or data.get("active", "ephemeral")
    value = (data.get("profiles") or {}).get(active, {}).get(name)  # type: ignore[union-attr]
    return str(value) if value else None


def ui_url(path: str) -> str:
    base = (api_url() or localserver.url()).removesuffix("/api")
    return f"{base}/{path.lstrip('/')}"
