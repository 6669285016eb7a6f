"""pgpitr.repository.url: one grammar for repository URLs, parsed once."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pgpitr.errors import InvalidInput, PitrError, RepositoryError
from pgpitr.repository import FileUrl, RepositoryUrl, S3Url, open_repository

FAST = settings(max_examples=300, deadline=None)

# -- accepted forms ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("file:///var/lib/pgpitr/repo", FileUrl(Path("/var/lib/pgpitr/repo"))),
        ("file://localhost/var/lib/pgpitr/repo", FileUrl(Path("/var/lib/pgpitr/repo"))),
        ("FILE://LocalHost/x", FileUrl(Path("/x"))),
        ("file:///a//b/./c/", FileUrl(Path("/a/b/c"))),
        ("file:////a", FileUrl(Path("/a"))),
        ("file:///srv/pgpitr%20repo", FileUrl(Path("/srv/pgpitr%20repo"))),  # taken literally
        ("file:///srv/my repo", FileUrl(Path("/srv/my repo"))),
        ("s3://b", S3Url("b")),
        ("S3://b/", S3Url("b")),
        ("s3://demo/pg", S3Url("demo", "pg")),
        ("s3://demo//pg/x/", S3Url("demo", "pg/x")),
        (
            "s3://demo/pg?endpoint=http://127.0.0.1:9000&region=eu-west-1&profile=backup",
            S3Url(
                "demo", "pg", endpoint="http://127.0.0.1:9000", region="eu-west-1", profile="backup"
            ),
        ),
        ("s3://demo?region=us-east-1", S3Url("demo", region="us-east-1")),
        (
            "s3://demo/pg?endpoint=http%3A%2F%2Fminio%3A9000",
            S3Url("demo", "pg", "http://minio:9000"),
        ),
    ],
)
def test_accepted(text: str, expected: RepositoryUrl) -> None:
    assert RepositoryUrl.parse(text) == expected


def test_file_localhost_is_the_same_url() -> None:
    local = RepositoryUrl.parse("file://localhost/x")
    assert local == RepositoryUrl.parse("file:///x")
    assert str(local) == "file:///x"
    assert isinstance(local, FileUrl) and local.path == Path("/x")
    assert local.is_file and not local.is_s3 and local.scheme == "file"


def test_query_order_is_irrelevant_and_normalised() -> None:
    a = RepositoryUrl.parse("s3://b/p?region=r&profile=x&endpoint=https://h:1")
    b = RepositoryUrl.parse("s3://b/p?endpoint=https://h:1&region=r&profile=x")
    assert a == b
    assert str(a) == "s3://b/p?endpoint=https://h:1&region=r&profile=x"
    assert isinstance(a, S3Url) and (a.bucket, a.prefix, a.region, a.profile) == (
        "b",
        "p",
        "r",
        "x",
    )
    assert a.is_s3 and not a.is_file and a.scheme == "s3"


def test_display() -> None:
    assert RepositoryUrl.parse("file://localhost/srv/r").display == "file:///srv/r"
    assert RepositoryUrl.parse("s3://b").display == "s3://b"
    assert RepositoryUrl.parse("s3://b/p?region=r&profile=x").display == "s3://b/p"
    assert (
        RepositoryUrl.parse("s3://b/p?endpoint=http://127.0.0.1:9000&region=r").display
        == "s3://b/p (endpoint http://127.0.0.1:9000)"
    )


def test_parse_takes_a_parsed_value_and_a_kind() -> None:
    url = RepositoryUrl.parse("s3://b/p")
    assert RepositoryUrl.parse(url) is url
    assert S3Url.parse("s3://b/p") == url
    with pytest.raises(InvalidInput, match="wrong kind of repository: expected file:///"):
        FileUrl.parse(url)
    with pytest.raises(InvalidInput, match="wrong kind of repository: expected s3://bucket/prefix"):
        S3Url.parse("file:///x")


def test_urls_are_immutable_and_hashable() -> None:
    url = RepositoryUrl.parse("file:///x")
    with pytest.raises(AttributeError):
        url.path = Path("/y")  # type: ignore[misc]
    assert {url, RepositoryUrl.parse("file://localhost/x")} == {url}


# -- refusals, each with what was expected -----------------------------------------------------

CREDENTIALS = "must not carry credentials"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the repository URL is empty: expected file:///var/lib/pgpitr/repo or s3://bucket"),
        ("/var/lib/repo", "is not a repository URL: expected file:///"),
        ("repo", "is not a repository URL: expected file:///"),
        ("file:/x", "is not a repository URL: expected file:///"),
        (" file:///x", "is not a repository URL: expected file:///"),
        ("ftp://host/x", "'ftp://host/x' is an unsupported repository URL: expected file:///"),
        ("http://example.com", "expected file:///var/lib/pgpitr/repo or s3://bucket"),
        ("file://", "names no directory: expected file:///var/lib/pgpitr/repo"),
        ("file://localhost", "names no directory: expected file:///"),
        ("file:///", "needs a directory: expected file:///"),
        ("file://repo/x", "names the host 'repo': a file repository is local, expected file:///"),
        ("file://host/abs", "names the host 'host'"),
        ("file:///a?b", "unknown file repository option(s) b: expected encryption"),
        ("file:///a#b", "a file URL takes only ?encryption=aes-256-gcm, expected file:///"),
        ("file:///a\nb", "cannot contain control characters"),
        ("s3://", "names no bucket: expected s3://bucket/prefix"),
        ("s3:///prefix", "names no bucket: expected s3://bucket/prefix"),
        ("s3://?region=r", "names no bucket"),
        ("s3://-b/x", "is not a bucket name: expected letters, digits"),
        ("s3://b:9000/x", "is not a bucket name"),
        ("s3://b/a b", "white space, '?' or '#': expected s3://bucket/prefix"),
        ("s3://b/x#frag", "has a fragment ('#'): expected s3://bucket/prefix"),
        ("s3://b/x?secret=1", "unknown S3 repository option(s) secret: expected endpoint"),
        ("s3://b/x?b=1&a=2&region=r", "unknown S3 repository option(s) a, b"),
        ("s3://b/x?region", "the S3 repository option region is empty"),
        ("s3://b/x?region=", "the S3 repository option region is empty"),
        ("s3://b/x?region=a&region=b", "the S3 repository option region is given twice"),
        ("s3://b/x?&", "has an empty query"),
        ("s3://b/x?region=a b", "region 'a b' is not a name: expected letters"),
        ("s3://b/x?profile=", "option profile is empty"),
        ("s3://b/x?endpoint=ftp://h", "is not an http(s) URL: expected e.g. endpoint=http://"),
        ("s3://b/x?endpoint=127.0.0.1:9000", "is not an http(s) URL"),
        ("s3://b/x?endpoint=http://h:port", "is not a URL: expected e.g. endpoint=http://"),
        ("s3://key:secret@bucket/x", CREDENTIALS),
        ("s3://key@bucket", CREDENTIALS),
        ("s3://b/x?endpoint=http://key:secret@h:9000", CREDENTIALS),
        ("file://user:pw@localhost/x", CREDENTIALS),
    ],
)
def test_refused(text: str, expected: str) -> None:
    with pytest.raises(InvalidInput) as info:
        RepositoryUrl.parse(text)
    assert expected in str(info.value)


def test_credentials_are_never_echoed() -> None:
    for text in ("s3://AKIA:s3cr3t@b/x", "s3://b/x?endpoint=http://AKIA:s3cr3t@h"):
        with pytest.raises(InvalidInput) as info:
            RepositoryUrl.parse(text)
        assert "s3cr3t" not in str(info.value)
        assert "AWS_ACCESS_KEY_ID" in str(info.value)  # the hint names the right way


def test_hints() -> None:
    with pytest.raises(InvalidInput) as info:
        RepositoryUrl.parse("/var/lib/repo")
    assert info.value.hint == "did you mean file:///var/lib/repo?"
    with pytest.raises(InvalidInput) as info:
        RepositoryUrl.parse("s3://b?x=1")
    assert info.value.hint == "valid options: encryption, endpoint, profile, region"


def test_values_built_directly_are_checked_too() -> None:
    with pytest.raises(InvalidInput, match="is not absolute"):
        FileUrl(Path("relative/repo"))
    with pytest.raises(InvalidInput, match="names no bucket"):
        S3Url("")
    assert FileUrl("/x//y") == FileUrl(Path("/x/y"))  # type: ignore[arg-type]
    assert S3Url("b", "/p/") == S3Url("b", "p")


def test_non_text_is_refused() -> None:
    with pytest.raises(InvalidInput, match="not a repository URL"):
        RepositoryUrl.parse(["s3://b"])  # type: ignore[arg-type]


# -- properties --------------------------------------------------------------------------------

_segment = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"), exclude_characters="/?#"),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in (".", ".."))
file_urls = st.lists(_segment, min_size=1, max_size=4).map(
    lambda parts: FileUrl(Path("/" + "/".join(parts)))
)
_name = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
_prefix_segment = st.text(
    st.characters(codec="ascii", exclude_categories=("Cc", "Zs"), exclude_characters="/?#"),
    min_size=1,
    max_size=12,
)
s3_urls = st.builds(
    S3Url,
    bucket=_name,
    prefix=st.lists(_prefix_segment, max_size=3).map("/".join),
    endpoint=st.none()
    | st.builds(
        "{}://{}{}".format,
        st.sampled_from(["http", "https"]),
        st.from_regex(r"[a-z0-9][a-z0-9.-]{0,11}", fullmatch=True),
        st.just("") | st.integers(1, 65535).map(":{}".format),
    ),
    region=st.none() | _name,
    profile=st.none() | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.@+=,-]{0,12}", fullmatch=True),
)
urls = file_urls | s3_urls


@FAST
@given(urls)
def test_round_trip(url: RepositoryUrl) -> None:
    assert RepositoryUrl.parse(str(url)) == url
    assert str(RepositoryUrl.parse(str(url))) == str(url)


@FAST
@given(urls)
def test_display_never_shows_options_other_than_the_endpoint(url: RepositoryUrl) -> None:
    shown = url.display
    assert "?" not in shown
    if isinstance(url, S3Url) and url.endpoint:
        assert shown.endswith(f" (endpoint {url.endpoint})")


@FAST
@given(st.text() | st.from_regex(r"(file|s3|FILE)://[^\n]*", fullmatch=True))
@example("file://localhost/x")
@example("s3://b/p?region=r&region=s")
@example("s3://b/p?endpoint=http://[::1")
def test_parse_is_idempotent_or_refuses(text: str) -> None:
    try:
        url = RepositoryUrl.parse(text)
    except InvalidInput as exc:
        assert "expected" in exc.message or "twice" in exc.message or exc.hint
        return
    assert RepositoryUrl.parse(str(url)) == url


# -- open_repository takes the typed value -------------------------------------------------------


def test_open_repository_exposes_the_location(tmp_path: Path) -> None:
    url = RepositoryUrl.parse(f"file://localhost{tmp_path}/repo")
    for given_url in (url, str(url), f"file://localhost{tmp_path}/repo"):
        repo = open_repository(given_url)
        assert repo.location == url
        assert repo.url == f"file://{tmp_path}/repo"
        assert repo.root == tmp_path / "repo"  # type: ignore[attr-defined]


def test_s3_repository_gets_typed_fields() -> None:
    repo = open_repository("s3://b/p/?endpoint=http://127.0.0.1:1&region=eu-west-1")
    assert repo.location == S3Url("b", "p", "http://127.0.0.1:1", "eu-west-1")
    assert repo.url == "s3://b/p (endpoint http://127.0.0.1:1)"
    assert (repo.bucket, repo.prefix) == ("b", "p")  # type: ignore[attr-defined]


def test_a_bad_key_is_a_pitr_error(tmp_path: Path) -> None:
    repo = open_repository(f"file://{tmp_path}")
    for key in ("/etc/passwd", "a/../../b", ".."):
        with pytest.raises(InvalidInput, match="invalid repository key") as info:
            repo.get_document(key)
        assert isinstance(info.value, PitrError)


def test_an_unknown_profile_is_a_repository_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    with pytest.raises(RepositoryError, match="the AWS profile 'nope' named by the repository"):
        open_repository("s3://b/p?profile=nope")
