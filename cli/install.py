"""``pgpitr install``: the steps only root takes, once per host (``make install`` runs it).

The service account (made when none exists), PGPITR_HOME handed to it, the local Prefect
server's API credentials (a 0600 file of the account's) and root's own Prefect profile, so that
``prefect`` from root's shell reaches the same server.  Then it leaves root like every other
command and writes the account's profile as the account.
"""

from __future__ import annotations

import os
import secrets

from cli import console
from deployments import localserver
from deployments.api import configured_url
from pgpitr import privilege, state
from pgpitr.errors import PitrError


def _existing_secret(account: privilege.Account) -> str | None:
    """The credentials the account already has, read by root without following a link and
    only from a file of the account's own."""
    try:
        fd = os.open(localserver.credentials_path(), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd) as f:
        if os.fstat(f.fileno()).st_uid != account.uid:
            return None
        return f.read().strip() or None


def app() -> None:
    """Install what only root can: the service account, its home, the API credentials."""
    if os.geteuid() != 0:
        raise PitrError(
            "`pgpitr install` is root's step (the service account and its home)",
            hint="run it as root, or `make install` as root",
        )
    home = state.home()
    account = privilege.make_service_account()
    handed = privilege.adopt_home(home, account)
    secret = _existing_secret(account) or (f"{localserver.AUTH_USER}:{secrets.token_urlsafe(32)}")
    local = configured_url() is None
    if local:  # root's own `prefect` finds the local server too
        localserver.write_profile(localserver.url(), secret)
    privilege.leave_root(home)
    if local:
        localserver.ensure_credentials(secret)
        localserver.write_profile(localserver.url())
    console.info(
        f"pgpitr runs as {account.name}; home {home}"
        + (f" ({handed} entries handed over from root)" if handed > 1 else "")
        + (f"; API credentials in {localserver.credentials_path()} (0600)" if local else "")
    )
