"""A repository that cannot be used: a clear message naming it, no secret, nothing created."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgpitr import cluster_repository
from pgpitr.manifest import data_key
from pgpitr.postgres.cluster import Cluster
from tests.conftest import cli, free_port


def _refused_create(home: Path, url: str, env: dict[str, str], secret: str):
    result = cli("cluster", "create", "rf", "--backup-repo", url, env=env, check=False)
    assert result.returncode == 6, result.stderr
    assert secret not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert not (home / "clusters" / "rf").exists(), "a refused create must leave nothing"
    return result.stderr


def test_refused_connection(home: Path) -> None:
    secret = "refused-secret-0123456789"
    url = f"s3://bucket-x/p?endpoint=http://127.0.0.1:{free_port()}"
    err = _refused_create(
        home, url, {"AWS_ACCESS_KEY_ID": "AKIAX", "AWS_SECRET_ACCESS_KEY": secret}, secret
    )
    assert "cannot reach the repository s3://bucket-x/p" in err


@pytest.mark.parametrize(
    ("which", "code", "hint"),
    [
        ("secret", "SignatureDoesNotMatch", "check the secret key"),
        ("key", "InvalidAccessKeyId", "check the access key"),
        ("bucket", "NoSuchBucket", "create the bucket"),
    ],
)
def test_wrong_credentials_and_missing_bucket(
    home: Path, moto_with_auth: dict, which: str, code: str, hint: str
) -> None:
    m = moto_with_auth
    key, secret, bucket = m["key"], m["secret"], m["bucket"]
    if which == "secret":
        secret = "wrong-secret-value-987654321"
    elif which == "key":
        key = "AKIAUNKNOWNKEY0000000"
    else:
        bucket = "no-such-bucket-here"
    url = f"s3://{bucket}/pg?endpoint={m['endpoint']}&region=us-east-1"
    err = _refused_create(
        home, url, {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}, secret
    )
    assert f"s3://{bucket}/pg" in err and code in err and hint in err
    assert m["secret"] not in err


def test_right_credentials_work_with_authentication_on(home: Path, moto_with_auth: dict) -> None:
    m = moto_with_auth
    url = f"s3://{m['bucket']}/ok?endpoint={m['endpoint']}&region=us-east-1"
    env = {"AWS_ACCESS_KEY_ID": m["key"], "AWS_SECRET_ACCESS_KEY": m["secret"]}
    cli("cluster", "create", "authok", "--backup-repo", url, env=env)
    cli(
        "cluster",
        "edit-backup-policy",
        "authok-postgresql-backup-policy",
        "--set",
        "schedule.logfile.enable=true",
        env=env,
    )
    cli("cluster", "backup", "authok", env=env)
    creds = Cluster.get("authok").state.credentials_file
    assert oct(creds.stat().st_mode & 0o777) == "0o600"
    assert creds.stat().st_uid == Cluster.get("authok").user.uid
    # the archiver, running as the server's OS user without these variables, uses that file
    assert "Completed" in cli("cluster", "list-backup", "authok", env=env).stdout


def test_restore_stops_at_a_damaged_backup_and_names_it(home: Path) -> None:
    cli("cluster", "create", "dmg")
    cli(
        "cluster",
        "edit-backup-policy",
        "dmg-postgresql-backup-policy",
        "--set",
        "schedule.logfile.enable=true",
    )
    cli("cluster", "backup", "dmg", "--backup-name", "b1")
    repo = cluster_repository.repository(Cluster.get("dmg"))
    path = Path(repo.root, data_key("dmg", "b1"))
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3] ^= 0x01
    path.write_bytes(bytes(raw))
    result = cli("cluster", "restore", "from-dmg", "--source-cluster", "dmg", check=False)
    assert result.returncode != 0
    assert "dmg/backups/b1/base.tar.zst" in result.stderr
    assert not (home / "clusters" / "from-dmg").exists()
    verify = cli("cluster", "verify-backup", "dmg", "--name", "b1", check=False)
    assert verify.returncode != 0 and "base.tar.zst" in verify.stderr
