"""A repository's URL, parsed once at the edge into a typed value.

One grammar::

    file:///abs/path            (file://localhost/abs/path is the same URL)
    s3://bucket/prefix?endpoint=URL&region=REGION&profile=NAME
    …?encryption=aes-256-gcm    (either kind: every object encrypted, see repository/crypt.py)

``RepositoryUrl.parse(text)`` returns a ``FileUrl`` or an ``S3Url`` (``parse_optional`` also
None for no text, as a flow parameter or an option left out gives); ``str()`` gives the
normalised URL back (``parse(str(u)) == u``) and ``display`` the form shown to people.  A file
URL's path is taken literally, without percent-decoding, as pgpitr has always written it
(``f"file://{path}"``).  Credentials never belong in the URL: they come from the AWS chain.
Kept light (no boto3): the WAL commands parse a URL once per segment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qsl, quote, urlsplit

from pgpitr.errors import InvalidInput

__all__ = ["FileUrl", "RepositoryUrl", "S3Url"]

FILE_EXAMPLE = "file:///var/lib/pgpitr/repo"
S3_EXAMPLE = "s3://bucket/prefix"
EXPECTED = f"expected {FILE_EXAMPLE} or {S3_EXAMPLE}?endpoint=URL&region=REGION"
S3_OPTIONS = ("endpoint", "region", "profile", "encryption")
FILE_OPTIONS = ("encryption",)
ENCRYPTIONS = ("aes-256-gcm",)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+=,-]*")  # a region or a profile name


def _credentials() -> InvalidInput:
    return InvalidInput(
        "a repository URL must not carry credentials",
        hint="use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile (?profile=NAME)",
    )


@dataclass(frozen=True)
class RepositoryUrl:
    """Where a repository lives.  Build one with ``RepositoryUrl.parse``."""

    scheme: ClassVar[str]
    example: ClassVar[str]

    @classmethod
    def parse(cls, text: str | RepositoryUrl) -> RepositoryUrl:
        """The URL ``text`` names, normalised; InvalidInput says what was expected."""
        url = text if isinstance(text, RepositoryUrl) else _parse(text)
        if not isinstance(url, cls):
            raise InvalidInput(
                f"{url.display} is the wrong kind of repository: expected {cls.example}"
            )
        return url

    @classmethod
    def parse_optional(cls, text: str | RepositoryUrl | None) -> RepositoryUrl | None:
        """``parse`` for an option that may be left out: None or "" (an empty form field or
        flag) is None."""
        return cls.parse(text) if text else None

    @property
    def display(self) -> str:
        """How the repository is shown to people (a URL never holds a secret)."""
        return str(self)

    @property
    def encrypted(self) -> bool:
        return getattr(self, "encryption", None) is not None

    @property
    def is_file(self) -> bool:
        return self.scheme == "file"

    @property
    def is_s3(self) -> bool:
        return self.scheme == "s3"


@dataclass(frozen=True)
class FileUrl(RepositoryUrl):
    """A repository in a local directory: ``file:///abs/path``."""

    path: Path
    encryption: str | None = None
    scheme: ClassVar[str] = "file"
    example: ClassVar[str] = FILE_EXAMPLE

    def __post_init__(self) -> None:
        _check_encryption(self.encryption)
        text = str(self.path)
        if _CONTROL.search(text):
            raise InvalidInput(f"a repository path cannot contain control characters: {EXPECTED}")
        if "?" in text or "#" in text:
            raise InvalidInput(
                f"the repository path {text!r} contains '?' or '#': a file URL takes only "
                f"?encryption=aes-256-gcm, expected {FILE_EXAMPLE}"
            )
        if not text.startswith("/"):
            raise InvalidInput(
                f"the repository path {text!r} is not absolute: expected {FILE_EXAMPLE}"
            )
        path = Path("/" + text.lstrip("/"))  # POSIX keeps a leading '//': not here
        if path == Path("/"):
            raise InvalidInput(f"a file URL needs a directory: expected {FILE_EXAMPLE}")
        object.__setattr__(self, "path", path)

    def __str__(self) -> str:
        return f"file://{self.path}" + (f"?encryption={self.encryption}" if self.encryption else "")

    @property
    def display(self) -> str:
        return f"file://{self.path}"


@dataclass(frozen=True)
class S3Url(RepositoryUrl):
    """A repository in an S3 bucket, under ``prefix`` (no leading or trailing '/')."""

    bucket: str
    prefix: str = ""
    endpoint: str | None = None
    region: str | None = None
    profile: str | None = None
    encryption: str | None = None
    scheme: ClassVar[str] = "s3"
    example: ClassVar[str] = S3_EXAMPLE

    def __post_init__(self) -> None:
        _check_encryption(self.encryption)
        if not self.bucket:
            raise InvalidInput(f"the URL names no bucket: expected {S3_EXAMPLE}")
        if not _BUCKET.fullmatch(self.bucket):
            raise InvalidInput(
                f"{self.bucket!r} is not a bucket name: expected letters, digits, '.', '-' and "
                f"'_', as in {S3_EXAMPLE}"
            )
        prefix = self.prefix.strip("/")
        if re.search(r"[\s?#]", prefix) or _CONTROL.search(prefix):
            raise InvalidInput(
                f"the prefix {prefix!r} contains white space, '?' or '#': expected {S3_EXAMPLE}"
            )
        object.__setattr__(self, "prefix", prefix)
        if self.endpoint is not None:
            _check_endpoint(self.endpoint)
        for name in ("region", "profile"):
            value = getattr(self, name)
            if value is not None and not _WORD.fullmatch(value):
                raise InvalidInput(
                    f"{name} {value!r} is not a name: expected letters, digits and '-', e.g. "
                    f"{name}={'us-east-1' if name == 'region' else 'backup'}"
                )

    def __str__(self) -> str:
        path = f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        options = [
            f"{name}={quote(value, safe=':/')}"
            for name in S3_OPTIONS
            if (value := getattr(self, name)) is not None
        ]
        return path + ("?" + "&".join(options) if options else "")

    @property
    def display(self) -> str:
        shown = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return shown + (f" (endpoint {self.endpoint})" if self.endpoint else "")


def _check_encryption(value: str | None) -> None:
    if value is not None and value not in ENCRYPTIONS:
        raise InvalidInput(
            f"encryption {value!r} is not supported: expected encryption=aes-256-gcm",
            hint="omit ?encryption= for an unencrypted repository",
        )


def _check_endpoint(endpoint: str) -> None:
    expected = "expected e.g. endpoint=http://127.0.0.1:9000"
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise InvalidInput(f"endpoint {endpoint!r} is not a URL: {expected}") from None
    if "@" in parts.netloc:
        raise _credentials()
    bad = re.search(r"[\s\x00-\x1f\x7f]", endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname or bad:
        raise InvalidInput(f"endpoint {endpoint!r} is not an http(s) URL: {expected}")


def _parse(text: object) -> RepositoryUrl:
    if not isinstance(text, str):
        raise InvalidInput(f"{text!r} is not a repository URL (not text): {EXPECTED}")
    # Surrounding white space is not trimmed: it would be part of a file path.
    if not text:
        raise InvalidInput(f"the repository URL is empty: {EXPECTED}")
    scheme, sep, rest = text.partition("://")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if sep and "@" in authority:  # before any message quotes the text
        raise _credentials()
    if _CONTROL.search(text):
        raise InvalidInput(f"a repository URL cannot contain control characters: {EXPECTED}")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        hint = f"did you mean file://{text}?" if text.startswith("/") else None
        raise InvalidInput(f"{text!r} is not a repository URL: {EXPECTED}", hint=hint)
    scheme = scheme.lower()
    if scheme == "file":
        if authority.lower() not in ("", "localhost"):
            raise InvalidInput(
                f"{text!r} names the host {authority!r}: a file repository is local, expected "
                f"{FILE_EXAMPLE} (or file://localhost/…)"
            )
        path = rest[len(authority) :]
        path, asked, query = path.partition("?")
        if not path:
            raise InvalidInput(f"{text!r} names no directory: expected {FILE_EXAMPLE}")
        options = _options(text, query, FILE_OPTIONS, "file") if asked else {}
        return FileUrl(Path(path), **options)
    if scheme == "s3":
        return _parse_s3(text, rest)
    raise InvalidInput(
        f"{text!r} is an unsupported repository URL: {EXPECTED}",
        hint="use file:///path or s3://bucket/prefix?endpoint=URL&region=REGION",
    )


def _parse_s3(text: str, rest: str) -> S3Url:
    if "#" in rest:
        raise InvalidInput(f"{text!r} has a fragment ('#'): expected {S3_EXAMPLE}")
    location, _, query = rest.partition("?")
    bucket, _, prefix = location.partition("/")
    if not bucket:
        raise InvalidInput(f"{text!r} names no bucket: expected {S3_EXAMPLE}")
    options = _options(text, query, S3_OPTIONS, "S3") if query else {}
    return S3Url(bucket, prefix, **options)


def _options(text: str, query: str, known: tuple[str, ...], kind: str) -> dict[str, str]:
    pairs = parse_qsl(query, keep_blank_values=True)
    unknown = sorted({name for name, _ in pairs} - set(known))
    if unknown:
        raise InvalidInput(
            f"unknown {kind} repository option(s) {', '.join(unknown)}: expected "
            f"{', '.join(known)}",
            hint=f"valid options: {', '.join(sorted(known))}",
        )
    options: dict[str, str] = {}
    for name, value in pairs:
        if name in options:
            raise InvalidInput(f"the {kind} repository option {name} is given twice in {text!r}")
        if not value:
            raise InvalidInput(
                f"the {kind} repository option {name} is empty: expected e.g. "
                + ("region=us-east-1" if kind == "S3" else "encryption=aes-256-gcm")
            )
        options[name] = value
    if not options:
        example = "region=REGION" if kind == "S3" else "encryption=aes-256-gcm"
        raise InvalidInput(f"{text!r} has an empty query: expected …?{example}")
    return options
