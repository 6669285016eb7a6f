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
        return explicit
    local = localserver.url()
    return local if answers(local) else None


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
        return explicit, False
    found, started = localserver.ensure()
    api_url.cache_clear()
    return found, started


def answers(url: str, timeout: float = 0.5) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _profile_setting(name: str) -> str | None:
    """A setting of the active Prefect profile, read without importing Prefect."""
    data = localserver.read_profiles()
    active = os.environ.get("PREFECT_PROFILE") or data.get("active", "ephemeral")
    value = (data.get("profiles") or {}).get(active, {}).get(name)  # type: ignore[union-attr]
    return str(value) if value else None


def ui_url(path: str) -> str:
    base = (api_url() or localserver.url()).removesuffix("/api")
    return f"{base}/{path.lstrip('/')}"
