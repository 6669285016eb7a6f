"""Backup repositories, named by URL: ``file:///path`` or ``s3://bucket/prefix?endpoint=…``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from pgpitr.errors import InvalidInput
from pgpitr.repository.base import ObjectInfo, Repository, StoredStream

__all__ = ["ObjectInfo", "Repository", "StoredStream", "open_repository", "validate_url"]

_S3_OPTIONS = {"endpoint", "region", "profile"}


def validate_url(url: str) -> str:
    """Check a repository URL's form without touching the repository; return it normalised."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        raise InvalidInput(
            "a repository URL must not carry credentials",
            hint="use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile (?profile=NAME)",
        )
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise InvalidInput(f"{url!r} is not a file URL like file:///var/lib/pgpitr/repo")
        return f"file://{Path(parts.path)}"
    if parts.scheme == "s3":
        if not parts.netloc:
            raise InvalidInput(f"{url!r} names no bucket: use s3://bucket/prefix")
        unknown = set(parse_qs(parts.query)) - _S3_OPTIONS
        if unknown:
            raise InvalidInput(
                f"unknown S3 repository option(s) {', '.join(sorted(unknown))}",
                hint=f"valid options: {', '.join(sorted(_S3_OPTIONS))}",
            )
        return url
    raise InvalidInput(
        f"unsupported repository URL {url!r}",
        hint="use file:///path or s3://bucket/prefix?endpoint=URL&region=REGION",
    )


def open_repository(url: str, credentials_file: Path | None = None) -> Repository:
    """The repository a URL names.  boto3 is imported only for an S3 URL.

    ``credentials_file`` (AWS shared-credentials format) is used only when the environment has
    no AWS keys: it is how the archiver, running as the server's OS user, finds them."""
    url = validate_url(url)
    parts = urlsplit(url)
    if parts.scheme == "file":
        from pgpitr.repository.file import FileRepository

        return FileRepository(Path(parts.path))
    from pgpitr.repository.s3 import S3Repository

    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return S3Repository(
        parts.netloc,
        parts.path,
        endpoint=options.get("endpoint"),
        region=options.get("region"),
        profile=options.get("profile"),
        credentials_file=credentials_file,
    )
