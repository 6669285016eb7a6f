"""Where the Prefect API is, found without importing Prefect (read-only commands stay fast)."""

from __future__ import annotations

import functools
import os
import tomllib
from pathlib import Path

LOCAL_SERVER = "http://127.0.0.1:4200/api"


@functools.cache
def api_url() -> str | None:
    """The configured Prefect API, or the local server if one answers, else None."""
    explicit = os.environ.get("PREFECT_API_URL") or _profile_setting("PREFECT_API_URL")
    if explicit:
        return explicit.rstrip("/")
    return LOCAL_SERVER if answers(LOCAL_SERVER) else None


def answers(url: str, timeout: float = 0.5) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _profile_setting(name: str) -> str | None:
    """A setting of the active Prefect profile, read without importing Prefect."""
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect")
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or data.get("active", "ephemeral")
    value = data.get("profiles", {}).get(active, {}).get(name)
    return str(value) if value else None


def ui_url(path: str) -> str:
    base = (api_url() or LOCAL_SERVER).removesuffix("/api")
    return f"{base}/{path.lstrip('/')}"
