"""A repository in an S3 bucket (AWS, MinIO, moto, any S3-compatible store).

``s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1&profile=NAME``.
Credentials come from the standard AWS chain (environment, shared config/credentials files, instance
roles); never from the URL.  An object is visible only once its PUT or its multipart upload has
completed, which is S3's durability guarantee; a failed multipart upload is aborted.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import boto3
import botocore.config
import botocore.exceptions
import botocore.loaders
import botocore.session

from pgpitr.errors import DeleteIncomplete, NotFound, RepositoryError
from pgpitr.repository.base import ObjectInfo, Repository, count
from pgpitr.repository.url import S3Url

PART_SIZE = 16 * 1024 * 1024

#: The request kind of each client method, as ``pgpitr --stats`` counts them.
_KIND = {
    "head_object": "HEAD",
    "get_object": "GET",
    "put_object": "PUT",
    "list_objects_v2": "LIST",
    "list_multipart_uploads": "LIST",
    "delete_object": "DELETE",
    "delete_objects": "DELETE",
    "create_multipart_upload": "PART",
    "upload_part": "PART",
    "complete_multipart_upload": "PART",
    "abort_multipart_upload": "PART",
}

_HINTS = {
    "InvalidAccessKeyId": "check the access key (AWS_ACCESS_KEY_ID or the profile)",
    "SignatureDoesNotMatch": "check the secret key (AWS_SECRET_ACCESS_KEY or the profile)",
    "AccessDenied": "check the access key and secret key, and the bucket's policy",
    "NoSuchBucket": "create the bucket or fix the repository URL",
    "AllAccessDisabled": "the bucket refuses all access: check its policy",
    "InvalidBucketName": "fix the bucket name in the repository URL",
}


#: Error codes of a store that is busy or briefly down (whatever the HTTP status says).
_BUSY = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "RequestLimitExceeded",
}


@functools.cache
def shared_data_loader(data_path: str | None = None) -> botocore.loaders.Loader:
    """botocore's data files (the S3 model, endpoints, retry rules) as this process parsed them
    once: a new botocore session parses them again for its first client, about 90 ms of CPU per
    repository opened.  They hold no credentials, so repositories sharing them cannot share
    credentials; each still gets a session of its own for those."""
    return botocore.loaders.create_loader(data_path)


class S3Repository(Repository):
    def __init__(self, location: S3Url, *, credentials_file: Path | None = None) -> None:
        self.location = location
        self.bucket = location.bucket
        self.prefix = location.prefix
        self.endpoint = endpoint = location.endpoint
        self.url = location.display
        core = botocore.session.Session()
        if (
            credentials_file is not None
            and "AWS_ACCESS_KEY_ID" not in os.environ
            and Path(credentials_file).exists()
        ):
            core.set_config_variable("credentials_file", str(credentials_file))
        try:
            session = boto3.session.Session(
                botocore_session=core,
                profile_name=location.profile,
                region_name=location.region or "us-east-1",
            )
        except botocore.exceptions.ProfileNotFound:
            raise RepositoryError(
                f"the AWS profile {location.profile!r} named by the repository {self.url} is "
                "not configured",
                hint="add it to ~/.aws/config or ~/.aws/credentials, or fix ?profile= in the URL",
            ) from None
        # after boto3's session set its own loader up (it adds to the loader's search path)
        core.register_component(
            "data_loader", shared_data_loader(core.get_config_variable("data_path"))
        )
        self._client = session.client(
            "s3",
            endpoint_url=endpoint,
            config=botocore.config.Config(
                # Prefect's task retries own the policy (tasks/_common.py); the client retries a
                # request once, so that one dropped request does not restart a whole stream.
                retries={"max_attempts": 2, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
                max_pool_connections=16,
                s3={"addressing_style": "path"} if endpoint else None,
            ),
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, exc: Exception, action: str, key: str) -> RepositoryError:
        where = f"{self.url}/{key}" if key else self.url
        if isinstance(exc, botocore.exceptions.ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
            # HEAD answers carry no body, hence no error code: name the likely cause
            code = (
                {"404": "NoSuchBucket", "403": "AccessDenied"}.get(code, code) if not key else code
            )
            return RepositoryError(
                f"the repository at {where} answered {status} ({code}) to {action}",
                hint=_HINTS.get(code),
                transient=str(status).startswith("5") or status == 429 or code in _BUSY,
            )
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            return RepositoryError(
                f"no AWS credentials found for the repository {self.url}",
                hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile",
            )
        if isinstance(
            exc,
            botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectionError,
        ):
            return RepositoryError(
                f"cannot reach the repository {self.url}: connection failed",
                hint="check that the endpoint is up and the URL is right",
                transient=True,
            )
        # botocore's other messages do not carry secrets, but keep only the class and the key.
        timed_out = isinstance(exc, botocore.exceptions.ReadTimeoutError)
        return RepositoryError(
            f"cannot {action} {where}: {type(exc).__name__}", transient=timed_out
        )

    def _call(self, action: str, key: str, method: str, **kwargs: Any) -> Any:
        count("s3", _KIND.get(method, method))
        try:
            return getattr(self._client, method)(**kwargs)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._error(exc, action, key) from None

    def stat(self, key: str) -> ObjectInfo | None:
        count("s3", "HEAD")
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._error(exc, "stat", key) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise self._error(exc, "stat", key) from None
        return ObjectInfo(key, head["ContentLength"])

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                count("s3", "LIST")  # one request per page of up to 1000 keys
                for item in page.get("Contents", []):
                    yield ObjectInfo(item["Key"][strip:], item["Size"])
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._error(exc, "list", prefix) from None

    def children(self, prefix: str = "") -> list[str]:
        # one level, with the delimiter: a page per 1,000 stanzas, not per 1,000 WAL objects
        strip = len(self._key(prefix))
        paginator = self._client.get_paginator("list_objects_v2")
        found: set[str] = set()
        try:
            pages = paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix), Delimiter="/")
            for page in pages:
                count("s3", "LIST")
                found.update(
                    p["Prefix"][strip:].rstrip("/") for p in page.get("CommonPrefixes", [])
                )
                found.update(item["Key"][strip:] for item in page.get("Contents", []))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._error(exc, "list", prefix) from None
        return sorted(found)

    def _open_read(self, key: str) -> BinaryIO:
        count("s3", "GET")
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise NotFound(f"object {self.url}/{key} does not exist") from None
            raise self._error(exc, "read", key) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise self._error(exc, "read", key) from None
        return response["Body"]

    def _write_atomic(self, key: str, chunks: Iterable[bytes]) -> int:
        full = self._key(key)
        buffer = bytearray()
        iterator = iter(chunks)
        for chunk in iterator:
            buffer += chunk
            if len(buffer) >= PART_SIZE:
                return self._multipart(key, full, buffer, iterator)
        self._call("write", key, "put_object", Bucket=self.bucket, Key=full, Body=bytes(buffer))
        return len(buffer)

    def _multipart(self, key: str, full: str, buffer: bytearray, rest: Iterator[bytes]) -> int:
        upload = self._call(
            "start an upload of", key, "create_multipart_upload", Bucket=self.bucket, Key=full
        )["UploadId"]
        parts: list[dict[str, Any]] = []
        size = 0

        def send(data: bytes) -> None:
            number = len(parts) + 1
            etag = self._call(
                "upload a part of",
                key,
                "upload_part",
                Bucket=self.bucket,
                Key=full,
                UploadId=upload,
                PartNumber=number,
                Body=data,
            )["ETag"]
            parts.append({"PartNumber": number, "ETag": etag})

        try:
            while True:
                while len(buffer) >= PART_SIZE:
                    send(bytes(buffer[:PART_SIZE]))
                    size += PART_SIZE
                    del buffer[:PART_SIZE]
                chunk = next(rest, None)
                if chunk is None:
                    break
                buffer += chunk
            if buffer or not parts:
                send(bytes(buffer))
                size += len(buffer)
            self._call(
                "complete an upload of",
                key,
                "complete_multipart_upload",
                Bucket=self.bucket,
                Key=full,
                UploadId=upload,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            try:
                count("s3", "PART")
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload)
            except Exception:  # noqa: S110 - the original failure is the one to report
                pass
            raise
        return size

    def delete(self, key: str) -> None:
        self._call("delete", key, "delete_object", Bucket=self.bucket, Key=self._key(key))

    def delete_many(self, keys: Iterable[str]) -> int:
        """DeleteObjects, 1,000 keys a request.  Its answer is 200 even when it refused keys
        (a bucket policy, an object lock, a store's hiccup): those are listed in ``Errors``,
        and every batch is read for them before anything is reported as deleted."""
        keys = list(keys)
        refused: dict[str, str] = {}
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            answer = self._call(
                "delete",
                batch[0],
                "delete_objects",
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": self._key(k)} for k in batch], "Quiet": True},
            )
            for error in answer.get("Errors") or ():
                refused[self._unkey(error.get("Key", ""))] = error.get("Code") or "?"
        if refused:
            raise self._refused(refused, len(keys))
        return len(keys)

    def _unkey(self, full: str) -> str:
        mine = f"{self.prefix}/" if self.prefix else ""
        return full[len(mine) :] if mine and full.startswith(mine) else full

    def _refused(self, refused: dict[str, str], asked: int) -> DeleteIncomplete:
        codes = sorted(set(refused.values()))
        shown = ", ".join(sorted(refused)[:5])
        more = f" and {len(refused) - 5} more" if len(refused) > 5 else ""
        return DeleteIncomplete(
            f"the repository at {self.url} refused to delete {len(refused)} of {asked} "
            f"object(s) ({', '.join(codes)}): {shown}{more}; they are still stored",
            failed=sorted(refused),
            deleted=asked - len(refused),
            hint=_HINTS.get(codes[0]) if len(codes) == 1 else None,
            # a store's hiccup passes; a policy or a lock refuses the same keys next time
            transient=all(code in _BUSY for code in codes),
        )

    def remove_stale_temporaries(self, older_than: float = 3600) -> int:
        """Abort multipart uploads a killed writer left behind (they are never visible)."""
        from datetime import UTC, datetime, timedelta

        limit = datetime.now(UTC) - timedelta(seconds=older_than)
        answer = self._call(
            "list uploads in",
            "",
            "list_multipart_uploads",
            Bucket=self.bucket,
            Prefix=self._key(""),
        )
        aborted = 0
        for upload in answer.get("Uploads", []):
            if upload["Initiated"] <= limit:
                self._call(
                    "abort an upload of",
                    upload["Key"],
                    "abort_multipart_upload",
                    Bucket=self.bucket,
                    Key=upload["Key"],
                    UploadId=upload["UploadId"],
                )
                aborted += 1
        return aborted

    def check(self) -> None:
        # A LIST, not a HEAD: its error answers carry the code (NoSuchBucket, InvalidAccessKeyId,
        # SignatureDoesNotMatch) that tells the user what to fix.
        self._call(
            "list", "", "list_objects_v2", Bucket=self.bucket, MaxKeys=1, Prefix=self._key("")
        )
        probe = ".pgpitr-check"
        self._call("write", probe, "put_object", Bucket=self.bucket, Key=self._key(probe), Body=b"")
        self.delete(probe)
