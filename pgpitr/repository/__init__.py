"""Backup repositories, named by URL: ``file:///path`` or ``s3://bucket/prefix?endpoint=…``."""

from __future__ import annotations

from pathlib import Path

from pgpitr.repository.base import ObjectInfo, Repository, StoredStream
from pgpitr.repository.url import FileUrl, RepositoryUrl, S3Url

__all__ = [
    "FileUrl",
    "ObjectInfo",
    "Repository",
    "RepositoryUrl",
    "S3Url",
    "StoredStream",
    "open_repository",
]


def open_repository(
    url: RepositoryUrl | str,
    credentials_file: Path | None = None,
    key_file: Path | str | None = None,
) -> Repository:
    """The repository a URL names (text is parsed).  boto3 is imported only for an S3 URL,
    cryptography only for an encrypted one (``?encryption=aes-256-gcm``).

    ``credentials_file`` (AWS shared-credentials format) is used only when the environment has
    no AWS keys: it is how the archiver, running as the server's OS user, finds them.
    ``key_file`` is the key file a cluster recorded; without one an encrypted repository's keys
    come from the environment (pgpitr/keys.py), and a missing key fails here, before any use."""
    location = RepositoryUrl.parse(url)
    backend: Repository
    if isinstance(location, FileUrl):
        from pgpitr.repository.file import FileRepository

        backend = FileRepository(location)
    else:
        assert isinstance(location, S3Url)
        from pgpitr.repository.s3 import S3Repository

        backend = S3Repository(location, credentials_file=credentials_file)
    if location.encryption is None:
        return backend
    from pgpitr import keys
    from pgpitr.repository.crypt import EncryptedRepository

    return EncryptedRepository(backend, keys.load(location.display, key_file), location.encryption)
