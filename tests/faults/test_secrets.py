"""With a known S3 secret key, a known encryption key and a known account password, run backup,
restore, create-account and a failing S3 call on an encrypted S3 repository; then search
everything pgpitr and Prefect recorded for them."""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import S3_SECRET, cli, reachable_tempdir
from tests.flows.api import flow_runs, logs
from tests.pg import archive_now, commit_now, sql

PASSWORD = "Known-Account-Password-7f3a"  # noqa: S105 - the value the sweep looks for
ENCRYPTION_KEY = bytes(range(7, 39))  # 32 bytes, as the sweep looks for them


def _all_artifacts() -> list[str]:
    """Every artifact of the session, however many the tests before this one made."""
    from prefect.client.orchestration import get_client

    found: list[str] = []
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_artifacts(limit=200, offset=len(found))
            found += [json.dumps([a.key, a.data, a.description], default=str) for a in page]
            if len(page) < 200:
                return found


def _postmaster_pid(home: Path, cluster: str) -> int:
    return int((home / "clusters" / cluster / "data" / "postmaster.pid").read_text().split()[0])


def _files_written(home: Path) -> list[Path]:
    """Every file pgpitr wrote outside the repository and the data directories."""
    found = []
    for path in home.rglob("*"):
        rel = path.relative_to(home).parts
        if path.is_file() and "repo" not in rel[:1] and "data" not in rel[2:3]:
            found.append(path)
    return found


def test_secrets_never_appear_anywhere(
    home: Path, s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pgpitr.postgres.osuser import server_user

    started = datetime.now(UTC)
    s3_url += "&encryption=aes-256-gcm"
    keys_dir = reachable_tempdir("pgpitr-keys-")
    key_file = keys_dir / "repo.key"
    key_file.write_text(ENCRYPTION_KEY.hex() + "\n")
    key_file.chmod(0o600)
    if not (user := server_user()).is_self:
        os.chown(key_file, user.uid, user.gid)
    monkeypatch.setenv("PGPITR_ENCRYPTION_KEY_FILE", str(key_file))
    # the same key in the environment too: no program pgpitr starts (the server) inherits it
    monkeypatch.setenv("PGPITR_ENCRYPTION_KEY", ENCRYPTION_KEY.hex())
    outputs = []
    outputs.append(cli("cluster", "create", "sec", "--backup-repo", s3_url))
    outputs.append(
        cli(
            "cluster",
            "edit-backup-policy",
            "sec-postgresql-backup-policy",
            "--set",
            "schedule.logfile.enable=true",
        )
    )
    outputs.append(cli("cluster", "backup", "sec"))
    outputs.append(
        cli(
            "cluster",
            "create-account",
            "sec",
            "--username",
            "alice",
            "--password-stdin",
            input=PASSWORD + "\n",
        )
    )
    outputs.append(
        cli("cluster", "grant-role", "sec", "--username", "alice", "--role", "READWRITE")
    )
    sql("sec", "CREATE TABLE msg (id int)")
    commit_now("sec", "INSERT INTO msg VALUES (1)")
    time.sleep(1.1)
    target = datetime.now(UTC).replace(microsecond=0).isoformat()
    time.sleep(1.1)
    commit_now("sec", "INSERT INTO msg VALUES (2)")
    archive_now("sec")
    outputs.append(
        cli(
            "cluster", "restore", "sec-copy", "--source-cluster", "sec", "--restore-to-time", target
        )
    )
    # a failing S3 call: the right secret, a wrong key id
    outputs.append(
        cli(
            "cluster",
            "create",
            "sec-bad",
            "--backup-repo",
            s3_url,
            check=False,
            env={
                "AWS_ACCESS_KEY_ID": "",
                "AWS_SECRET_ACCESS_KEY": S3_SECRET,
                "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            },
        )
    )
    assert sql("sec-copy", "SELECT id FROM msg") == [(1,)]

    secrets = [
        S3_SECRET,
        PASSWORD,
        ENCRYPTION_KEY.hex(),
        ENCRYPTION_KEY.hex().upper(),
        base64.b64encode(ENCRYPTION_KEY).decode(),
        repr(ENCRYPTION_KEY),
    ]
    text = "\n".join(o.stdout + o.stderr for o in outputs)
    runs = [r for r in flow_runs() if r.created and r.created >= started]
    assert runs, "the commands ran as flows"
    text += "\n".join(json.dumps(r.parameters, default=str) for r in runs)
    text += "\n".join(m for r in runs for m in logs(r.id))
    text += "\n".join(_all_artifacts())
    for path in _files_written(home):
        text += path.read_text(errors="replace") if path.name != "aws-credentials" else ""
    text += Path(home, "clusters", "sec", "log", "postgresql.log").read_text()
    for secret in secrets:
        assert secret not in text
    # the servers (and their archive_command) never inherit the CLI's secrets: the archiver
    # reads the AWS keys from its own 0600 file, and it archives
    for cluster in ("sec", "sec-copy"):
        archive_now(cluster)
        environ = Path(f"/proc/{_postmaster_pid(home, cluster)}/environ").read_bytes().decode()
        assert "PGPITR_ENCRYPTION_KEY=" not in environ and ENCRYPTION_KEY.hex() not in environ
        assert "AWS_SECRET_ACCESS_KEY=" not in environ and S3_SECRET not in environ
    for cluster in ("sec", "sec-copy"):  # the key file's path is recorded, not the key
        state = json.loads((home / "clusters" / cluster / "cluster.json").read_text())
        assert state["encryption_key_file"] == str(key_file)
    shutil.rmtree(keys_dir)

    for cluster in ("sec", "sec-copy"):
        creds = home / "clusters" / cluster / "aws-credentials"
        assert creds.exists() and oct(creds.stat().st_mode & 0o777) == "0o600"
        assert S3_SECRET in creds.read_text()  # the one place it is kept, for the archiver
    assert os.stat(home / "clusters" / "sec" / "data").st_mode & 0o077 == 0
