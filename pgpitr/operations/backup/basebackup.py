"""The pg_basebackup run of a backup: its tar streamed (compressed by the tool or by pgpitr) into
the repository, its progress, the backup_manifest read out of the tar on the way (``ManifestTap``),
and the WAL range it reports."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from pgpitr.errors import CommandError, PitrError
from pgpitr.manifest import backup_manifest_key, data_key
from pgpitr.operations.backup.history_file import range_from_history_file
from pgpitr.operations.edit_policy import INCREMENTAL_SINCE
from pgpitr.postgres import binaries
from pgpitr.postgres.cluster import Cluster
from pgpitr.postgres.command import basebackup_command, check, popen
from pgpitr.repository import Repository

_PROGRESS = re.compile(rb"(\d+)/(\d+) kB")
_START = re.compile(r"write-ahead log start point: ([0-9A-F]+/[0-9A-F]+) on timeline (\d+)")
_END = re.compile(r"write-ahead log end point: ([0-9A-F]+/[0-9A-F]+)")

Progress = Callable[[int, int], None]  # (bytes done, bytes expected)


def compression_of(level: int) -> str:
    """0: the tar stored as it comes (for fast disks and data that does not compress)."""
    return "none" if level == 0 else f"zstd:{level}"


def level_of(compression: str) -> int:
    """The inverse of ``compression_of``, for a policy's canonical ``none`` or ``zstd:N``."""
    return 0 if compression == "none" else int(compression.partition(":")[2] or 3)


class ManifestTap:
    """A tar stream passed through as it is read, keeping the member ``backup_manifest``
    (pg_basebackup writes it last): the ustar headers are followed, the data is not copied."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._header = bytearray()
        self._remaining = 0  # data bytes of the current member still to come
        self._padding = 0  # then zeros up to the next 512-byte block
        self._keep = False
        self.manifest = bytearray()

    def read(self, size: int = -1) -> bytes:
        chunk = self._raw.read(size)
        if chunk:
            self._feed(memoryview(chunk))
        return chunk

    def _feed(self, data: memoryview) -> None:
        i, n = 0, len(data)
        while i < n:
            if self._remaining:
                take = min(self._remaining, n - i)
                if self._keep:
                    self.manifest += data[i : i + take]
                self._remaining -= take
                i += take
            elif self._padding:
                take = min(self._padding, n - i)
                self._padding -= take
                i += take
            else:
                take = min(512 - len(self._header), n - i)
                self._header += data[i : i + take]
                i += take
                if len(self._header) == 512:
                    self._start_member(bytes(self._header))
                    self._header.clear()

    def _start_member(self, header: bytes) -> None:
        if not header.strip(b"\0"):
            return  # the two zero blocks that end the archive
        size = _tar_number(header[124:136])
        self._remaining, self._padding = size, (-size) % 512
        name = header[:100].split(b"\0", 1)[0]
        self._keep = name == b"backup_manifest" and header[156:157] in (b"0", b"\0")
        if self._keep:
            self.manifest.clear()


def _tar_number(field: bytes) -> int:
    """A tar header's number: octal text, or base-256 when the high bit is set (large files)."""
    if field[0] & 0x80:
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    return int(field.strip(b"\0 ") or b"0", 8)


#: how long pg_basebackup's output may take to be read to its end once it has exited
STDERR_GRACE = 60.0


def stream_backup(
    cluster: Cluster,
    repo: Repository,
    stanza: str,
    name: str,
    log_backup: bool,
    compress_level: int,
    workers: int,
    progress: Progress | None,
    parent_file: Path | None = None,
    standby: bool = False,
) -> dict:
    # pg_basebackup compresses when its build can (15+ with libzstd); otherwise pgpitr does, in
    # the same format, so that a backup reads back the same whoever compressed it.  On 17+ pgpitr
    # always does: the raw tar passes through it so that backup_manifest is read out on the way
    # (decompressing a copy of the tool's output would cost a second pass over the data).
    major = binaries.major_of(cluster.bindir)
    # a standby writes no backup history file: its WAL range is read from backup_manifest
    tap = major >= INCREMENTAL_SINCE or standby
    by_tool = compress_level > 0 and not tap and binaries.basebackup_compresses_zstd(cluster.bindir)
    argv = basebackup_command(
        cluster.bindir,
        cluster.state.socket_dir,
        cluster.state.port,
        label=name,
        include_wal=not log_backup,
        compress_level=compress_level if by_tool else 0,
        workers=workers,
        superuser=cluster.superuser,
        major=major,
        incremental_from=parent_file,
    )
    process = popen(argv, user=cluster.client_user)
    stderr = bytearray()
    expected = [0]

    def read_stderr() -> None:
        assert process.stderr is not None
        while chunk := process.stderr.read1(4096):
            stderr.extend(chunk)
            found = _PROGRESS.findall(chunk)
            if found:
                done, total = (int(v) * 1024 for v in found[-1])
                expected[0] = total
                if progress:
                    progress(done, total)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert process.stdout is not None
        key = data_key(stanza, name, compression_of(compress_level))
        source: BinaryIO = process.stdout
        tapped = ManifestTap(source) if tap else None
        if tapped is not None:
            source = tapped  # type: ignore[assignment]
        if compress_level and not by_tool:
            import zstandard

            compressor = zstandard.ZstdCompressor(level=compress_level, threads=workers)
            source = compressor.stream_reader(source, read_size=1 << 20)
        stored = repo.put_stream(key, source)
    except BaseException:
        process.kill()
        process.wait()
        raise
    finally:
        process.wait()
        # the pipe ends with the process: a reader still busy is stalled (e.g. in a progress
        # callback), and its text would be cut short
        reader.join(timeout=STDERR_GRACE)
    if reader.is_alive():
        raise PitrError(
            f"pg_basebackup of {cluster.name!r} ended but its output was not read to the end "
            f"within {STDERR_GRACE:.0f} s",
            hint="run the backup again",
            transient=True,
        )
    text = stderr.decode(errors="replace")
    try:
        check(process, argv, text)
    except CommandError:
        _refuse_unsummarised(cluster, text, parent_file)
        raise
    manifest_fields: dict = {}
    if tapped is not None:
        if not tapped.manifest:
            raise PitrError(
                f"the backup stream of {cluster.name!r} ended without its backup_manifest",
                hint="run the backup again; if it happens again, check the server log",
            )
        import hashlib

        repo.put_document(backup_manifest_key(stanza, name), bytes(tapped.manifest))
        manifest_fields["backup_manifest_sha256"] = hashlib.sha256(tapped.manifest).hexdigest()
    start, end = _START.search(text), _END.search(text)
    if start and end:
        wal_range = (start.group(1), end.group(1), int(start.group(2)))
    elif standby and tapped is not None:
        wal_range = range_from_manifest(bytes(tapped.manifest))
    elif log_backup:  # -X none prints no WAL range: the server's backup history file has it
        wal_range = range_from_history_file(cluster, repo, stanza, name)
    else:
        # -X fetch prints both points; nothing archives the history file with log backup off,
        # so waiting for it could only end in a misleading timeout
        raise PitrError(
            f"pg_basebackup of {cluster.name!r} did not report its WAL start and end points",
            hint="run the backup again; its output ended: " + " | ".join(text.splitlines()[-3:]),
            transient=True,
        )
    return {
        "start_lsn": wal_range[0],
        "stop_lsn": wal_range[1],
        "timeline": wal_range[2],
        "database_size": expected[0],
        "stored_size": stored.size,
        "sha256": stored.sha256,
        **manifest_fields,
    }


def range_from_manifest(manifest: bytes) -> tuple[str, str, int]:
    """(start LSN, stop LSN, start timeline) from backup_manifest's WAL-Ranges (one range per
    timeline the backup's WAL spans)."""
    import json

    from pgpitr.wal.lsn import Lsn

    ranges = json.loads(manifest)["WAL-Ranges"]
    first = min(ranges, key=lambda r: Lsn.parse(r["Start-LSN"]))
    last = max(ranges, key=lambda r: Lsn.parse(r["End-LSN"]))
    return first["Start-LSN"], last["End-LSN"], int(first["Timeline"])


def _refuse_unsummarised(cluster: Cluster, stderr: str, parent_file: Path | None) -> None:
    """pg_basebackup --incremental refuses when the WAL summaries do not reach back to the
    parent's start (summarize_wal turned on after it): say so, and the way out."""
    if parent_file is None:
        return
    if "WAL summaries are required" in stderr or "WAL summarization" in stderr:
        detail = next((line.strip() for line in stderr.splitlines() if "WAL summar" in line), "")
        raise PitrError(
            f"the server's WAL summaries of {cluster.name!r} do not cover the parent backup "
            f"(summarize_wal was off for part of it): {detail}",
            hint=f"take a full backup (`pgpitr cluster backup {cluster.name} --type full`); "
            "incrementals against it will work",
        )
