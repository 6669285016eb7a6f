"""The backups of a stanza and their lineages: which are usable, which depend on which.

An incremental backup (PostgreSQL 17+) restores only with every backup it was taken against:
its *lineage* (``lineage``), from the full backup through each parent to itself, oldest first.
A backup counts in the window only when every link of its lineage is Completed and its data
object is in the repository (``unusable`` says why one does not); ``dependents`` are the backups
whose lineage runs through a backup, which is deleted or expired only together with them.
"""

from __future__ import annotations

import socket

from pgpitr.errors import NotFound
from pgpitr.manifest import BackupManifest, damage_key, manifest_key, read_manifest
from pgpitr.osutil import process_alive
from pgpitr.repository import Repository
from pgpitr.wal import archive


def _alive(manifest: BackupManifest) -> bool:
    """Whether the process an InProgress backup names still runs (on this host; elsewhere,
    it is taken at its word)."""
    if (manifest.machine or manifest.host) != socket.gethostname():
        return True
    return bool(manifest.pid) and process_alive(int(manifest.pid or 0))


def _loaded(repo: Repository, stanza: str, name: str) -> BackupManifest:
    manifest = read_manifest(repo, stanza, name)
    if manifest.status == "InProgress" and not _alive(manifest):
        return manifest.replace(status="Failed")  # its process died: it never completes
    return manifest


def list_backups(repo: Repository, stanza: str) -> list[BackupManifest]:
    """Every backup of a stanza, oldest first; one whose process died is Failed."""
    found = []
    folder = f"{stanza}/backups/"
    for info in repo.list(folder):
        if info.key.endswith("/backup.json"):
            found.append(_loaded(repo, stanza, info.key[len(folder) : -len("/backup.json")]))
    return sorted(found, key=lambda b: (b.start_time, b.name))


def lineage(backups: list[BackupManifest], name: str) -> list[BackupManifest]:
    """The backups ``name`` restores from, the full one first and ``name`` last; a link that
    is not listed ends it early (``unusable`` names it)."""
    by_name = {b.name: b for b in backups}
    links: list[BackupManifest] = []
    current = by_name.get(name)
    while current is not None and current.name not in {b.name for b in links}:
        links.append(current)
        current = by_name.get(current.parent) if current.parent else None
    return links[::-1]


def dependents(backups: list[BackupManifest], name: str) -> list[str]:
    """Every backup whose lineage runs through ``name`` (not ``name`` itself), newest first:
    the order in which they can be removed without ever leaving an orphan behind."""
    found = [
        b
        for b in backups
        if b.name != name and any(link.name == name for link in lineage(backups, b.name))
    ]
    return [b.name for b in sorted(found, key=lambda b: (b.start_time, b.name), reverse=True)]


def unusable(
    backups: list[BackupManifest],
    present: set[str] | None = None,
    damaged: set[str] | frozenset[str] = frozenset(),
) -> dict[str, str]:
    """Completed backups a restore cannot use, and why: a link of the lineage Failed, running
    or missing, or (when ``present``, the names whose data object exists, is given) a link's
    data gone, or a link's data found damaged by a read (``damaged``)."""
    by_name = {b.name: b for b in backups}
    reasons: dict[str, str] = {}
    for b in backups:
        if not b.completed:
            continue
        current: BackupManifest | None = b
        while current is not None:
            own = current.name == b.name
            if present is not None and current.name not in present:
                reasons[b.name] = (
                    "its data is missing from the repository"
                    if own
                    else f"its parent {current.name} has no data in the repository"
                )
                break
            if current.name in damaged:
                reasons[b.name] = (
                    "its data was found damaged (checksum mismatch); `pgpitr cluster "
                    "verify-backup` reads it again"
                    if own
                    else f"its parent {current.name} was found damaged"
                )
                break
            if not current.parent:
                break
            parent = by_name.get(current.parent)
            if parent is None:
                reasons[b.name] = f"its parent {current.parent} is missing"
                break
            if not parent.completed:
                reasons[b.name] = f"its parent {parent.name} is {parent.status}"
                break
            current = parent
    return reasons


def broken_links(
    repo: Repository, stanza: str, backups: list[BackupManifest], damage: bool = True
) -> dict[str, str]:
    """``unusable`` with what the repository holds, from one listing of the stanza's backups:
    whose data is there, and (unless ``damage`` is False: a verify reads it again) which reads
    found damaged."""
    present, damaged = set(), set()
    for info in repo.list(f"{stanza}/backups/"):
        name = info.key.split("/")[-2]
        if info.key.endswith(("/base.tar.zst", "/base.tar")):
            present.add(name)
        elif info.key == damage_key(stanza, name):
            damaged.add(name)
    return unusable(backups, present, damaged if damage else set())


def get_backup(repo: Repository, stanza: str, name: str) -> BackupManifest:
    key = manifest_key(stanza, name)
    if not repo.exists(key):
        raise NotFound(
            f"backup {name!r} of cluster {stanza!r} does not exist",
            hint=f"see `pgpitr cluster list-backup {stanza}`",
        )
    return _loaded(repo, stanza, name)


def save_backup(repo: Repository, stanza: str, manifest: BackupManifest) -> None:
    repo.put_json(manifest_key(stanza, manifest.name), manifest.to_dict())


def leftover_stanza(repo: Repository, stanza: str) -> bool:
    """True when a stanza holds no backup and no WAL segment, only its archive info or history
    files: what `delete-backup --force` leaves of a deleted cluster.  Those would mislead a new
    cluster of the same name (another system identifier, old timelines), so creating one removes
    them."""
    found = False
    for info in repo.list(f"{stanza}/"):
        found = True
        name = info.key.rsplit("/", 1)[-1]
        if info.key.endswith("/backup.json") or archive.SEGMENT_RE.match(name.split("-", 1)[0]):
            return False
    return found
