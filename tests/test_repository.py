"""One suite, both backends: the filesystem and S3 (moto's server over HTTP)."""

from __future__ import annotations

import io

import pytest

from pgpitr.errors import ChecksumMismatch, InvalidInput, NotFound, RepositoryError
from pgpitr.repository import RepositoryUrl, open_repository


@pytest.fixture
def repo(repo_url: str):
    r = open_repository(repo_url)
    r.check()
    return r


def test_documents_round_trip_and_list(repo) -> None:
    repo.put_document("a/b/one", b"first")
    repo.put_json("a/c/two.json", {"x": 1})
    assert repo.get_document("a/b/one") == b"first"
    assert repo.get_json("a/c/two.json") == {"x": 1}
    assert [i.key for i in repo.list("a/")] == ["a/b/one", "a/c/two.json"]
    assert [i.key for i in repo.list("a/b/o")] == ["a/b/one"]
    assert repo.list("nothing/") is not None and list(repo.list("nothing/")) == []


def test_stream_is_stored_with_its_checksum_and_verified_on_read(repo) -> None:
    payload = bytes(range(256)) * 100_000  # 25.6 MB: a multipart upload on S3
    stored = repo.put_stream("big/data", io.BytesIO(payload))
    assert stored.size == len(payload)
    with repo.open_verified("big/data", stored.sha256, stored.size) as f:
        assert f.read() == payload
    with pytest.raises(ChecksumMismatch, match="big/data"):
        with repo.open_verified("big/data", "0" * 64, stored.size) as f:
            f.read()


class _BrokenPipe(io.RawIOBase):
    """A producer that dies after some data, as pg_basebackup killed mid-stream."""

    def __init__(self, good: int) -> None:
        self.left = good

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if self.left <= 0:
            raise OSError("the producer died")
        n = min(len(buffer), self.left)
        buffer[:n] = b"x" * n
        self.left -= n
        return n


def test_a_stream_whose_producer_fails_stores_nothing(repo) -> None:
    import threading

    with pytest.raises(OSError, match="the producer died"):
        repo.put_stream("broken/data", io.BufferedReader(_BrokenPipe(5 << 20)))
    assert list(repo.list("broken/")) == []
    for thread in threading.enumerate():
        if thread.name == "read-ahead":
            thread.join(5)
            assert not thread.is_alive()


def test_damaged_document_is_reported_by_name(repo) -> None:
    repo.put_document("doc", b"x" * 10_000)
    raw = bytearray(repo._open_read("doc").read())
    raw[len(raw) // 2] ^= 0xFF
    repo._write_atomic("doc", [bytes(raw)])
    with pytest.raises(ChecksumMismatch, match="doc"):
        repo.get_document("doc")


def test_missing_object_and_delete(repo) -> None:
    with pytest.raises(NotFound):
        repo.get_document("absent")
    assert repo.stat("absent") is None
    repo.put_document("p/1", b"1")
    repo.put_document("p/2", b"2")
    assert repo.delete_prefix("p/") == 2
    assert list(repo.list("p/")) == []
    repo.delete("p/1")  # deleting what is gone is fine


def test_failed_write_leaves_nothing_visible(repo) -> None:
    def chunks():
        yield b"x" * (20 * 1024 * 1024)
        raise OSError("producer died")

    with pytest.raises(OSError):
        repo._write_atomic("partial/object", chunks())
    assert repo.stat("partial/object") is None
    assert list(repo.list("partial/")) == []


def test_url_validation() -> None:
    with pytest.raises(InvalidInput, match="credentials"):
        RepositoryUrl.parse("s3://key:secret@bucket/x")
    with pytest.raises(InvalidInput, match="unsupported"):
        RepositoryUrl.parse("ftp://host/x")
    with pytest.raises(InvalidInput, match="unknown S3 repository option"):
        RepositoryUrl.parse("s3://bucket/x?secret=1")


def test_unreachable_endpoint_names_the_repository(monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    from tests.conftest import free_port

    repo = open_repository(f"s3://b/x?endpoint=http://127.0.0.1:{free_port()}")
    with pytest.raises(RepositoryError) as info:
        repo.check()
    assert "cannot reach the repository s3://b/x" in str(info.value)
    assert "very-secret-value" not in str(info.value)


def test_missing_bucket(moto_endpoint, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    repo = open_repository(f"s3://no-such-bucket/x?endpoint={moto_endpoint}")
    with pytest.raises(RepositoryError, match="(?s)404 .NoSuchBucket.*create the bucket"):
        repo.check()
