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


def open_repository(url: RepositoryUrl | str, credentials_file: Path | None = None) -> Repository:
    """The repository a URL names (text is parsed).  boto3 is imported only for an S3 URL.

    ``credentials_file`` (AWS shared-credentials format) is used only when the environment has
    no AWS keys: it is how the archiver, running as the server's OS user, finds them."""
    location = RepositoryUrl.parse(url)
    if isinstance(location, FileUrl):
        from pgpitr.repository.file import FileRepository

        return FileRepository(location)
    assert isinstance(location, S3Url)
    from pgpitr.repository.s3 import S3Repository

    return S3Repository(location, credentials_file=credentials_file)
