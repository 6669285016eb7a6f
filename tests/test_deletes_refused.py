"""Deletes that S3 refuses for some keys: DeleteObjects answers 200 and lists the refusals per key
in its body.  Against moto's server over HTTP, with a bucket policy that denies s3:DeleteObject
on chosen keys (moto reads it for each key of a batch): the refusal is raised naming the keys,
nothing reports a removal that did not happen, and the catalog index names what is stored."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from pgpitr.catalog import backups
from pgpitr.errors import DeleteIncomplete, RepositoryError
from pgpitr.manifest import BackupManifest, data_key, manifest_key
from pgpitr.operations import retention
from pgpitr.repository import Repository, open_repository
from pgpitr.wal import archive
from pgpitr.wal import index as archive_index
from tests.conftest import S3_SECRET
from tests.test_retention import SEG, T0

PREFIX = "backups"  # the s3_url fixture's


def _deny_deletes(url: str, keys: list[str]) -> None:
    """The bucket refuses s3:DeleteObject on KEYS (repository keys), and allows the rest."""
    parsed = urlsplit(url)
    endpoint = parse_qs(parsed.query)["endpoint"][0]
    bucket = parsed.netloc
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:DeleteObject",
                "Resource": [f"arn:aws:s3:::{bucket}/{PREFIX}/{key}" for key in keys],
            }
        ],
    }
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))


def _segment_key(number: int) -> str:
    name = archive.Segment(1, number).name(SEG)
    return f"s/wal/{name[:16]}/{name}-{number:064x}.zst"


def _archive(repo: Repository, numbers: range) -> None:
    """Segments NUMBERS archived and indexed, as pushes leave them."""
    repo.put_json(
        archive.archive_info_key("s"), {"wal_segment_size": SEG, "system_identifier": "1"}
    )
    archive_index.start(repo, "s")
    for number in numbers:
        repo.put_document(_segment_key(number), b"seg")
    archive_index.record_pushed(
        repo, "s", [(archive.Segment(1, n).name(SEG), f"{n:064x}", None) for n in numbers]
    )


def _backup(repo: Repository, name: str, hours: int, start_lsn: str) -> None:
    m = BackupManifest(
        name,
        "s",
        "Completed",
        T0.replace(hour=hours),
        timeline=1,
        wal_segment_size=SEG,
        start_lsn=start_lsn,
    )
    backups.save_backup(repo, "s", m)
    repo.put_document(data_key("s", name), b"data")


def test_a_batched_delete_that_s3_refuses_for_some_keys_raises_naming_them(s3_url: str) -> None:
    repo = open_repository(s3_url)
    keys = [f"d/object-{i}" for i in range(5)]
    for key in keys:
        repo.put_document(key, b"x")
    _deny_deletes(s3_url, keys[1:3])
    with pytest.raises(DeleteIncomplete) as raised:
        repo.delete_prefix("d/")
    error = raised.value
    assert error.failed == keys[1:3] and error.deleted == 3
    assert "refused to delete 2 of 5 object(s) (AccessDenied)" in error.message
    assert "d/object-1, d/object-2" in error.message
    assert error.transient is False  # a policy refuses the same keys on a retry
    assert error.hint and "bucket's policy" in error.hint
    assert S3_SECRET not in str(error)
    assert sorted(i.key for i in repo.list("d/")) == keys[1:3]


def test_pruned_wal_that_s3_refuses_stays_claimed_by_the_index_and_is_not_counted(
    s3_url: str,
) -> None:
    repo = open_repository(s3_url)
    _archive(repo, range(1, 7))
    _backup(repo, "b4", 1, start_lsn="0/4000028")
    _deny_deletes(s3_url, [_segment_key(2)])
    with pytest.raises(DeleteIncomplete) as raised:
        retention.prune_wal(repo, "s")
    assert raised.value.failed == [_segment_key(2)]
    stored = sorted(archive.split_object_key(i.key)[0] for i in repo.list("s/wal/"))
    assert stored == [archive.Segment(1, n).name(SEG) for n in (2, 4, 5, 6)]
    index = archive_index.load(repo, "s", SEG, write=False).timeline(1)
    assert [n for n in range(1, 7) if index.contains(n)] == [2, 4, 5, 6]


def test_a_backup_whose_data_s3_refuses_to_delete_stays_listed_and_is_not_reported_removed(
    s3_url: str,
) -> None:
    repo = open_repository(s3_url)
    _archive(repo, range(1, 7))
    _backup(repo, "old", 1, start_lsn="0/2000028")
    _backup(repo, "older", 0, start_lsn="0/1000028")
    _backup(repo, "new", 2, start_lsn="0/4000028")
    _deny_deletes(s3_url, [data_key("s", "older")])
    with pytest.raises(RepositoryError) as raised:  # newest first: old goes, then older fails
        retention.delete_backups(repo, "s", ["old", "older"], force=True)
    message = raised.value.message
    assert message.startswith("deleting backup 'older' of 's': ")
    assert data_key("s", "older") in message
    assert message.endswith("; removed before it: old")
    assert "run the deletion again" in (raised.value.hint or "")
    assert {b.name for b in backups.list_backups(repo, "s")} == {"older", "new"}
    assert repo.exists(manifest_key("s", "older")) and repo.exists(data_key("s", "older"))
