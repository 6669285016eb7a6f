"""A cluster's repository: where its backups and WAL go, with its encryption key."""

from __future__ import annotations

import configparser
import io
import os

from pgpitr import keys
from pgpitr.errors import (
    EncryptionKeyError,
    PitrError,
    RepositoryError,
)
from pgpitr.postgres import conf
from pgpitr.postgres.cluster import Cluster
from pgpitr.postgres.command import OsUser
from pgpitr.repository import FileUrl, Repository, RepositoryUrl, open_repository


def repository(cluster: Cluster) -> Repository:
    return open_repository(
        cluster.state.repository,
        cluster.state.credentials_file,
        cluster.state.encryption_key_file or None,
    )


def encryption_key_file(url: RepositoryUrl, user: OsUser, recorded: str = "") -> str:
    """The key file a cluster archiving into ``url`` records ("" for a plain repository):
    checked to hold keys, mode 0600, readable by the server's OS user ``user``."""
    if not url.encrypted:
        return ""
    path = keys.key_file_for_server(url.display, recorded or None)
    if not user.is_self:
        from pgpitr.postgres.command import run

        if run(["test", "-r", str(path)], user=user, check=False).returncode != 0:
            raise EncryptionKeyError(
                f"the key file {path} is not readable by the OS user {user.name}, which runs "
                "PostgreSQL's archive and restore commands",
                hint=f"chown {user.name} {path} (mode 0600), in a directory it can enter",
            )
    return str(path)


def check_new_cluster_key(url: RepositoryUrl | None) -> None:
    """Before a create flow starts: an encrypted repository's key file is usable."""
    from pgpitr.postgres.osuser import server_user

    if url is None or not url.encrypted:
        return
    try:
        user = server_user(create=False)
    except PitrError:  # no server account yet: the flow creates it, then checks
        return
    encryption_key_file(url, user)


def store_credentials(cluster: Cluster, text: str | None = None) -> None:
    """Keep the AWS keys of the environment (or TEXT, a credentials file's) for the archiver
    (mode 0600, server account)."""
    text = text or credentials_text(cluster.state.repository)
    if text:
        conf.write_file(cluster.state.credentials_file, text, cluster.owner, 0o600)


def credentials_text(url: RepositoryUrl) -> str | None:
    """The credentials file of the environment's AWS keys for URL; None when it needs none."""
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not url.is_s3 or not key or not secret:
        return None
    ini = configparser.ConfigParser()
    ini["default"] = {"aws_access_key_id": key, "aws_secret_access_key": secret}
    if os.environ.get("AWS_SESSION_TOKEN"):
        ini["default"]["aws_session_token"] = os.environ["AWS_SESSION_TOKEN"]
    text = io.StringIO()
    ini.write(text)
    return text.getvalue()


def prepare_file_repository(cluster: Cluster) -> None:
    """A file repository must be writable by the server account, which runs the archiver."""
    location = cluster.state.repository
    if not isinstance(location, FileUrl):
        return
    from pgpitr.postgres.command import run
    from pgpitr.postgres.osuser import make_dir

    root = location.path
    if not root.exists():
        try:
            make_dir(root, cluster.user, 0o750)
        except OSError as exc:
            raise RepositoryError(
                f"cannot make the repository directory {root}: {exc.strerror}",
                hint="give a repository URL whose directory can be made, or make it "
                f"and chown it to {cluster.state.os_user}",
            ) from None
    probe = run(["test", "-w", str(root), "-a", "-x", str(root)], user=cluster.user, check=False)
    if probe.returncode != 0:
        raise RepositoryError(
            f"the OS user {cluster.state.os_user} cannot write to the repository {location}",
            hint=f"chown {cluster.state.os_user} {root}",
        )
