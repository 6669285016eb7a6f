"""Encryption at rest (issue 15, part 4): the stored format, keys and rotation, the
walkthrough on an encrypted file repository and on encrypted S3, where a marker written into a
table must never appear in any stored object, raw or zstd-decompressed, and a restore that meets
a renamed segment (tests/test_encryption_identity.py has the rest of the name binding)."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pgpitr import cluster_repository, keys
from pgpitr.catalog import backups as catalog_backups
from pgpitr.errors import ChecksumMismatch, EncryptionKeyError, InvalidInput
from pgpitr.manifest import copy_data
from pgpitr.repository import RepositoryUrl, open_repository
from pgpitr.repository.crypt import HEADER_SIZE, MAGIC, TAG, EncryptedRepository
from pgpitr.repository.file import FileRepository
from pgpitr.wal import archive
from tests.conftest import cli, reachable_tempdir
from tests.pg import archive_now, rows, sql

SMALL = 64  # a chunk size that gives small objects several chunks


def _ring(*keys_: bytes) -> keys.Keyring:
    return keys.Keyring(tuple(keys_), "the test keys")


@pytest.fixture
def plain(tmp_path: Path) -> FileRepository:
    return FileRepository(tmp_path / "repo")


def _stored(repo: FileRepository, key: str) -> Path:
    return repo.root / key


# -- the stored format ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, SMALL - 1, SMALL, SMALL + 1, 5 * SMALL, 5 * SMALL + 7])
def test_objects_round_trip_at_every_size_and_are_stored_encrypted(
    plain: FileRepository, size: int
) -> None:
    ring = _ring(os.urandom(32))
    repo = EncryptedRepository(plain, ring, chunk_size=SMALL)
    data = os.urandom(size)
    stored = repo.put_stream("s/stream", io.BytesIO(data))
    assert stored.size == size  # what a reader gets back, as the manifests record it
    with repo.open_verified("s/stream", stored.sha256, size) as f:
        assert f.read() == data
    repo.put_document("s/doc", data)
    assert repo.get_document("s/doc") == data
    raw = _stored(plain, "s/stream").read_bytes()
    chunks = size // SMALL + (1 if size % SMALL or size == 0 else 0)
    assert len(raw) == HEADER_SIZE + size + chunks * TAG
    assert raw.startswith(MAGIC) and bytes.fromhex(ring.current_id) in raw[:HEADER_SIZE]
    assert size < 8 or data not in raw


def test_encryption_streams_chunk_by_chunk_never_the_whole_object() -> None:
    from pgpitr.repository.crypt import encrypt_chunks

    consumed = 0

    def source() -> Iterator[bytes]:
        nonlocal consumed
        for _ in range(100):
            consumed += 1
            yield os.urandom(SMALL)

    sealed = encrypt_chunks(_ring(os.urandom(32)), source(), SMALL, name="s/stream")
    next(sealed)  # the header
    next(sealed)
    assert consumed <= 2  # one chunk sealed once the next one began: nothing buffered beyond


def test_an_encrypted_s3_repository_streams_a_multipart_object(
    s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pgpitr.repository.s3 import PART_SIZE

    monkeypatch.delenv(keys.ENV_FILE, raising=False)
    monkeypatch.setenv(keys.ENV_KEY, os.urandom(32).hex())
    repo = open_repository(s3_url + "&encryption=aes-256-gcm")
    data = os.urandom(PART_SIZE + 3 * (1 << 20) + 5)
    stored = repo.put_stream("s/big", io.BytesIO(data))
    with repo.open_verified("s/big", stored.sha256, len(data)) as f:
        back = bytearray()
        while piece := f.read(1 << 16):
            back += piece
    assert back == data
    assert repo.stat("s/big").size > len(data)  # the header and a tag per chunk


def _damaged(repo: EncryptedRepository, key: str) -> str:
    with pytest.raises(ChecksumMismatch) as info, repo._open_read(key) as f:
        f.read()
    return str(info.value)


def test_a_changed_truncated_extended_or_reordered_object_fails_as_damaged(
    plain: FileRepository,
) -> None:
    repo = EncryptedRepository(plain, _ring(os.urandom(32)), chunk_size=SMALL)
    repo.put_document("s/doc", os.urandom(4 * SMALL))  # incompressible: several chunks stored
    path = _stored(plain, "s/doc")
    good = path.read_bytes()
    sealed = SMALL + TAG
    body = good[HEADER_SIZE:]
    assert len(body) > 2 * sealed
    variants = {
        "a flipped byte in a chunk": good[:-5] + bytes([good[-5] ^ 1]) + good[-4:],
        "a flipped byte in the salt": good[: HEADER_SIZE - 1]
        + bytes([good[HEADER_SIZE - 1] ^ 1])
        + body,
        "cut mid-chunk": good[:-3],
        "cut at a chunk boundary": good[: HEADER_SIZE + sealed],
        "a chunk added": good + good[HEADER_SIZE : HEADER_SIZE + sealed],
        "two chunks swapped": good[:HEADER_SIZE]
        + body[sealed : 2 * sealed]
        + body[:sealed]
        + body[2 * sealed :],
    }
    for what, damaged in variants.items():
        path.write_bytes(damaged)
        message = _damaged(repo, "s/doc")
        assert f"object {plain.url}/s/doc is damaged" in message, what
    path.write_bytes(good)
    assert len(repo.get_document("s/doc")) == 4 * SMALL


def test_a_wrong_key_is_reported_as_one_and_a_plain_or_encrypted_stanza_refuses_the_other(
    plain: FileRepository,
) -> None:
    right, wrong = _ring(os.urandom(32)), _ring(os.urandom(32))
    EncryptedRepository(plain, right).put_json("s/archive.info", {"system_identifier": "1"})
    with pytest.raises(EncryptionKeyError) as info:
        EncryptedRepository(plain, wrong).get_json("s/archive.info")
    message = str(info.value)
    assert f"wrong encryption key for the repository {plain.url}" in message
    assert right.current_id in message and wrong.current_id in message
    with pytest.raises(EncryptionKeyError, match="is encrypted .*PGPITR_ENCRYPTION_KEY_FILE"):
        plain.get_json("s/archive.info")
    plain.put_json("p/archive.info", {"system_identifier": "2"})
    with pytest.raises(EncryptionKeyError, match="is not encrypted, but the repository URL"):
        EncryptedRepository(plain, right).get_json("p/archive.info")


def test_rotation_new_objects_under_the_first_key_old_ones_read_with_the_key_they_name(
    plain: FileRepository,
) -> None:
    old, new = os.urandom(32), os.urandom(32)
    EncryptedRepository(plain, _ring(old)).put_document("s/old", b"written before")
    rotated = EncryptedRepository(plain, _ring(new, old))
    rotated.put_document("s/new", b"written after")
    assert rotated.get_document("s/old") == b"written before"
    assert rotated.get_document("s/new") == b"written after"
    assert bytes.fromhex(keys.key_id(new)) in _stored(plain, "s/new").read_bytes()[:HEADER_SIZE]
    with pytest.raises(EncryptionKeyError, match="wrong encryption key"):
        EncryptedRepository(plain, _ring(new)).get_document("s/old")  # the old key dropped


# -- keys ----------------------------------------------------------------------------------


def _key_file(directory: Path, text: str, mode: int = 0o600) -> Path:
    path = directory / "pgpitr.key"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_key_files_hex_or_base64_one_per_line_mode_0600_and_never_quoted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = os.urandom(32), os.urandom(32)
    path = _key_file(tmp_path, f"# current first\n{a.hex()}\n\n{base64.b64encode(b).decode()}\n")
    ring = keys.read_key_file(path)
    assert ring.keys == (a, b) and ring.current_id == keys.key_id(a)
    assert a.hex() not in repr(ring) and keys.key_id(a) in repr(ring)

    path.chmod(0o640)
    with pytest.raises(EncryptionKeyError, match=r"may be read by group or others \(mode 0640\)"):
        keys.read_key_file(path)
    typo = a.hex()[:-1] + "g"
    bad = _key_file(tmp_path, f"{b.hex()}\n{typo}\n")
    with pytest.raises(EncryptionKeyError) as info:
        keys.read_key_file(bad)
    assert "line 2 of the key file" in str(info.value) and typo not in str(info.value)

    monkeypatch.delenv(keys.ENV_FILE, raising=False)
    monkeypatch.delenv(keys.ENV_KEY, raising=False)
    with pytest.raises(EncryptionKeyError, match="repository R is encrypted: set PGPITR_ENC"):
        keys.load("R")
    monkeypatch.setenv(keys.ENV_KEY, b.hex())
    assert keys.load("R").keys == (b,)
    good = _key_file(tmp_path, a.hex())
    monkeypatch.setenv(keys.ENV_FILE, str(good))
    assert keys.load("R").keys == (a,)  # the file before the key itself
    (tmp_path / "recorded").mkdir()
    recorded = _key_file(tmp_path / "recorded", b.hex())
    assert keys.load("R", recorded).keys == (b,)  # a cluster's recorded file before the env


def test_the_url_names_the_encryption_on_both_kinds() -> None:
    for text in (
        "file:///srv/repo?encryption=aes-256-gcm",
        "s3://bucket/p?endpoint=http://127.0.0.1:9000&region=r&encryption=aes-256-gcm",
    ):
        url = RepositoryUrl.parse(text)
        assert url.encrypted and RepositoryUrl.parse(str(url)) == url
        assert "encryption" not in url.display
    assert not RepositoryUrl.parse("file:///srv/repo").encrypted
    assert RepositoryUrl.parse("file:///r?encryption=aes-256-gcm") != RepositoryUrl.parse(
        "file:///r"
    )
    with pytest.raises(InvalidInput, match="encryption 'rot13' is not supported"):
        RepositoryUrl.parse("file:///srv/repo?encryption=rot13")


def test_a_plain_repository_never_imports_cryptography(tmp_path: Path) -> None:
    """The WAL commands of a plain repository stay as fast as they were."""
    code = (
        "import sys, pathlib\n"
        "from pgpitr.wal import archive\n"
        "from pgpitr.repository import open_repository\n"
        f"repo = open_repository('file://{tmp_path}/repo')\n"
        f"p = pathlib.Path('{tmp_path}/000000010000000000000001'); p.write_bytes(b'x' * 1000)\n"
        "archive.push_file(repo, 's', p)\n"
        f"archive.fetch_file(repo, 's', p.name, pathlib.Path('{tmp_path}/back'))\n"
        "assert 'cryptography' not in sys.modules, 'imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


# -- the walkthrough, encrypted ------------------------------------------------------------

MARKER = "pgpitr-marker-7c1e9b2a-never-stored-in-clear"


@pytest.fixture
def key_dir() -> Iterator[Path]:
    path = reachable_tempdir("pgpitr-keys-")
    yield path
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _server_key_file(directory: Path, *keys_: bytes) -> Path:
    """A key file the server's OS user owns (it runs the WAL commands), mode 0600."""
    from pgpitr.postgres.osuser import server_user

    path = directory / "repo.key"
    path.write_text("".join(f"{k.hex()}\n" for k in keys_))
    path.chmod(0o600)
    user = server_user()
    if not user.is_self:
        os.chown(path, user.uid, user.gid)
    return path


def _objects(url: str) -> dict[str, bytes]:
    """Every object in the repository, as stored, read around pgpitr."""
    location = RepositoryUrl.parse(url)
    if location.is_file:
        root = location.path  # type: ignore[attr-defined]
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    import boto3

    s3 = boto3.client("s3", endpoint_url=location.endpoint, region_name="us-east-1")  # type: ignore[attr-defined]
    bucket, prefix = location.bucket, location.prefix  # type: ignore[attr-defined]
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            found[item["Key"].removeprefix(f"{prefix}/")] = body
    return found


def _inflated(data: bytes) -> bytes:
    import zstandard

    try:
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    except zstandard.ZstdError:
        return b""


def test_encrypted_walkthrough_restores_exact_rows_and_stores_nothing_in_clear(
    home: Path, repo_url: str, key_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = repo_url + ("&" if "?" in repo_url else "?") + "encryption=aes-256-gcm"
    first, second = os.urandom(32), os.urandom(32)

    # no key: refused before anything is created
    monkeypatch.delenv(keys.ENV_FILE, raising=False)
    monkeypatch.delenv(keys.ENV_KEY, raising=False)
    refused = cli("cluster", "create", "enc", "--backup-repo", url, check=False)
    assert refused.returncode == 6, refused.stderr
    assert "is encrypted: set PGPITR_ENCRYPTION_KEY_FILE" in refused.stderr
    assert not (home / "clusters" / "enc").exists()

    key_file = _server_key_file(key_dir, first)
    monkeypatch.setenv(keys.ENV_FILE, str(key_file))
    cli("cluster", "create", "enc", "--backup-repo", url)
    cli(
        "cluster",
        "edit-backup-policy",
        "enc-postgresql-backup-policy",
        "--set",
        "schedule.logfile.enable=true",
    )
    cli("cluster", "backup", "enc")
    monkeypatch.delenv(keys.ENV_FILE)  # from here on the cluster's recorded key file is used

    # rotation: a new key first, the old one kept below it; new objects use the new one
    _server_key_file(key_dir, second, first)
    sql("enc", "CREATE TABLE msg (id int PRIMARY KEY, note text)")
    sql("enc", "INSERT INTO msg VALUES (1, %s)", (MARKER,))
    after_1 = datetime.now(UTC)
    noted = (after_1 + timedelta(seconds=1)).replace(microsecond=0)
    while datetime.now(UTC) < noted + timedelta(seconds=1):
        time.sleep(0.1)
    sql("enc", "INSERT INTO msg VALUES (2, %s)", (MARKER,))
    archive_now("enc")
    sql("enc", "CHECKPOINT")  # the marker's heap page on disk: in the next backup's tar
    cli("cluster", "backup", "enc")
    cli(
        "cluster",
        "restore",
        "enc-copy",
        "--restore-to-time",
        noted.isoformat(),
        "--source-cluster",
        "enc",
    )
    assert rows("enc-copy") == [1]
    assert rows("enc") == [1, 2]

    stored = _objects(url)
    assert any("/backups/" in k for k in stored) and any("/wal/" in k for k in stored)
    ids = {bytes.fromhex(keys.key_id(k)) for k in (first, second)}
    for key, data in stored.items():
        assert data.startswith(MAGIC), f"{key} is stored in clear"
        assert data[14:22] in ids, key
        for text in (data, _inflated(data)):
            assert MARKER.encode() not in text, key
            assert first not in text and second not in text
    assert any(data[14:22] == bytes.fromhex(keys.key_id(second)) for data in stored.values())
    # the control: read through pgpitr with the key, the marker is in the archived WAL
    repo = open_repository(url, key_file=key_file)
    assert any(MARKER.encode() in repo.get_document(k) for k in stored if "/wal/0" in k)
    newest = catalog_backups.list_backups(repo, "enc")[-1]
    tar = io.BytesIO()
    copy_data(repo, "enc", newest, tar)
    assert MARKER.encode() in tar.getvalue(), "the control: the marker is in the backup's data"
    info = repo.get_json("enc/archive.info")
    assert info["encryption"] == {"algorithm": "aes-256-gcm", "key_id": keys.key_id(first)}
    state = (home / "clusters" / "enc" / "cluster.json").read_text()
    assert str(key_file) in state and first.hex() not in state and second.hex() not in state

    if not url.startswith("file:"):
        return  # the refusals of a wrong key are the repository kind's same code: once is enough
    # a wrong key (the file replaced, not rotated): refused before anything is made
    backups = {k for k in _objects(url) if "/backups/" in k}
    _server_key_file(key_dir, os.urandom(32))
    for argv in (
        ("cluster", "backup", "enc"),
        ("cluster", "restore", "enc-2", "--source-cluster", "enc"),
    ):
        refused = cli(*argv, check=False)
        assert refused.returncode == 6, refused.stderr
        assert "wrong encryption key for the repository" in refused.stderr
    assert not (home / "clusters" / "enc-2").exists()
    after = _objects(url)
    assert {k for k in after if "/backups/" in k} == backups
    assert not [k for k in after if k.startswith("enc-2/")]


def test_a_restore_refuses_an_encrypted_segment_renamed_as_another_and_wal_fetch_aborts_replay(
    home: Path, key_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The segment replay needs is replaced by a later segment's object, named with that
    object's own checksum (what a rename around pgpitr can do best): PostgreSQL's
    restore_command must stop recovery with an error (exit code > 125), never hand it over."""
    from pgpitr.errors import PitrError, TamperedObject
    from tests import engine
    from tests.faults.helpers import archived_cluster, now, wait_archived
    from tests.pg import commit_now

    monkeypatch.setenv(keys.ENV_FILE, str(_server_key_file(key_dir, os.urandom(32))))
    url = f"file://{key_dir / 'repo'}?encryption=aes-256-gcm"
    cluster = archived_cluster("ren", url)
    sql("ren", "CREATE TABLE msg (id int)")
    commit_now("ren", "INSERT INTO msg VALUES (1)")
    time.sleep(1.1)
    target = now()
    time.sleep(1.1)
    commit_now("ren", "INSERT INTO msg VALUES (2)")
    needed = sql("ren", "SELECT pg_walfile_name(pg_switch_wal())")[0][0]
    commit_now("ren", "INSERT INTO msg VALUES (3)")  # the window's end: the last segment
    later = sql("ren", "SELECT pg_walfile_name(pg_switch_wal())")[0][0]
    wait_archived(cluster, later)

    repo = cluster_repository.repository(cluster)
    assert isinstance(repo, EncryptedRepository)
    ((needed_key, _),) = archive.stored_versions(repo, "ren", needed)
    ((later_key, later_sha),) = archive.stored_versions(repo, "ren", later)
    renamed = archive.object_key("ren", needed, later_sha)
    root = repo.inner.root  # type: ignore[attr-defined]
    (root / renamed).write_bytes((root / later_key).read_bytes())
    (root / needed_key).unlink()

    with pytest.raises(PitrError) as info:
        engine.restore("ren-copy", "ren", target.replace(microsecond=0))
    assert renamed in str(info.value), str(info.value)
    assert f'could not restore file "{needed}"' in str(info.value)  # PostgreSQL's own words
    assert not (home / "clusters" / "ren-copy").exists()

    # restore_command as PostgreSQL runs it: the installed package, isolated
    fetched = subprocess.run(
        [sys.executable, "-E", "-m", "pgpitr", "--home", str(home), "wal-fetch"]
        + ["--cluster", "ren", needed, str(home / "RECOVERYXLOG")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert fetched.returncode == 255, fetched.stderr  # > 125: recovery stops with an error
    assert f"{renamed} was written under another name" in fetched.stderr
    assert not (home / "RECOVERYXLOG").exists()
    with pytest.raises(TamperedObject):
        archive.fetch_file(repo, "ren", needed, home / "RECOVERYXLOG")
