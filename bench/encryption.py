"""What encryption at rest costs (issue 15, part 4): WAL archiving and backup throughput with
and without ``?encryption=aes-256-gcm`` on a file repository.

- **WAL archiving**: N real segments (pgbench's, copied out of pg_wal) queued as ``.ready``
  files, then pgpitr's own ``archive_command`` run for each in turn, as PostgreSQL's archiver
  runs it (a shell, ``pgpitr wal-push``, the push worker on the first call, the marker test on
  the others), timed from the first call to the last acknowledgement.
- **Backup**: a full backup of the pgbench database (``backup.run``, zstd:3, 2 workers).
- **The cipher alone**: chunked AES-256-GCM over 256 MiB in memory, one thread.

Runs alternate plain and encrypted; medians.
``python -m bench encryption [SCALE [SEGMENTS [RUNS]]]`` (or ``python -m bench.encryption``);
JSON in bench/results/.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.results import save
from pgpitr import keys
from pgpitr import state as st
from pgpitr.operations import backup as bk
from pgpitr.operations import create, edit_policy
from pgpitr.postgres import cluster, conf
from pgpitr.postgres.osuser import make_dir, server_user
from pgpitr.repository.url import RepositoryUrl
from pgpitr.steps import Steps
from tests.conftest import reachable_tempdir

PG_BINDIR = Path("/usr/lib/postgresql/15/bin")


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _segments(datadir: Path, count: int) -> list[Path]:
    wal = sorted(p for p in (datadir / "pg_wal").iterdir() if len(p.name) == 24)
    return wal[:-1][-count:]  # the current segment is still being written


def _archive_round(home: Path, name: str, segments: list[Path]) -> float:
    """Queue ``segments`` in the serverless cluster ``name``'s pg_wal and archive them all the
    way PostgreSQL's archiver does; the seconds it took."""
    state = st.ClusterState.load(name, home)
    pg_wal = state.datadir / "pg_wal"
    status = pg_wal / "archive_status"
    shutil.rmtree(pg_wal, ignore_errors=True)
    status.mkdir(parents=True)
    for seg in segments:
        os.link(seg, pg_wal / seg.name)
        (status / f"{seg.name}.ready").touch()
    command = conf.archive_command(home, name, True)
    env = {**os.environ, "PGPITR_HOME": str(home)}
    started = time.perf_counter()
    for seg in segments:
        argv = command.replace("%p", f"pg_wal/{seg.name}").replace("%f", seg.name)
        subprocess.run(["sh", "-c", argv], cwd=state.datadir, env=env, check=True)
        (status / f"{seg.name}.ready").rename(status / f"{seg.name}.done")
    return time.perf_counter() - started


def _serverless(home: Path, name: str, url: str, system_id: str, key_file: str) -> None:
    state = st.ClusterState(
        name=name,
        platform="local",
        port=1,
        os_user="root",
        bindir=str(PG_BINDIR),
        repository=url,
        home=str(home),
        system_identifier=system_id,
        encryption_key_file=key_file,
    )
    (state.datadir / "global").mkdir(parents=True)
    (state.datadir / "global" / "pg_control").write_bytes(int(system_id).to_bytes(8, "little"))
    state.spool.mkdir(parents=True)
    state.save()


def _cipher_rate(megabytes: int = 256) -> float:
    from pgpitr.repository.crypt import encrypt_chunks

    ring = keys.Keyring((os.urandom(32),), "bench")
    block = os.urandom(1 << 20)
    started = time.perf_counter()
    for _ in encrypt_chunks(ring, (block for _ in range(megabytes)), name="bench/object"):
        pass
    return megabytes / (time.perf_counter() - started)


def main(scale: int = 30, segments: int = 64, runs: int = 5) -> dict:
    home = reachable_tempdir("pgpitr-bench-enc-")
    os.environ["PGPITR_HOME"] = str(home)
    user = server_user()
    key_file = home / "bench.key"
    key_file.write_text(os.urandom(32).hex() + "\n")
    key_file.chmod(0o600)
    if not user.is_self:
        os.chown(key_file, user.uid, user.gid)
    os.environ[keys.ENV_FILE] = str(key_file)
    repos = {"plain": home / "repo-plain", "encrypted": home / "repo-encrypted"}
    for path in repos.values():
        make_dir(path, user, 0o750)
    urls = {
        "plain": f"file://{repos['plain']}",
        "encrypted": f"file://{repos['encrypted']}?encryption=aes-256-gcm",
    }
    out: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()}, {os.cpu_count()} cores, {platform.machine()}",
        "load_average_at_start": os.getloadavg(),
        "postgresql": 15,
        "scale": scale,
        "runs": runs,
        "note": "medians of alternating runs on a file repository; the machine is shared "
        "and noisy (other jobs ran beside it): compare the ratios",
    }
    try:
        c = create.create("benc", repository_url=urls["plain"])

        def sql(query: str) -> None:
            with c.connect() as db:
                db.execute(query)

        sql("ALTER SYSTEM SET max_wal_size = '8GB'")
        sql("ALTER SYSTEM SET checkpoint_timeout = '1h'")
        c.reload()
        conn = ["-h", str(c.state.socket_dir), "-p", str(c.state.port), "-U", "postgres"]
        # pgbench -i again until pg_wal holds enough segments (max_wal_size keeps them)
        for _ in range(20):
            subprocess.run(
                [str(PG_BINDIR / "pgbench"), "-i", "-q", "-s", str(scale), *conn, "postgres"],
                check=True,
                capture_output=True,
            )
            if len(_segments(c.state.datadir, segments)) >= segments:
                break
        with c.connect() as db:
            out["database_bytes"] = db.execute("SELECT pg_database_size('postgres')").fetchone()[0]
            db.execute("SELECT pg_switch_wal()")
        copies = home / "segments"
        copies.mkdir()
        for seg in _segments(c.state.datadir, segments):
            shutil.copyfile(seg, copies / seg.name)
        wal = sorted(copies.iterdir())
        out["segments"] = len(wal)

        # WAL archiving: a serverless cluster per kind, a fresh stanza per run
        system_id = c.state.system_identifier
        rates: dict[str, list[float]] = {"plain": [], "encrypted": []}
        for run in range(runs):
            kinds = ["plain", "encrypted"] if run % 2 == 0 else ["encrypted", "plain"]
            for kind in kinds:
                name = f"wal-{kind}-{run}"
                recorded = str(key_file) if kind == "encrypted" else ""
                _serverless(home, name, urls[kind], system_id, recorded)
                seconds = _archive_round(home, name, wal)
                rates[kind].append(round(len(wal) / seconds, 1))
        out["wal_push_segments_per_second"] = {
            kind: {"median": _median(v), "all": v} for kind, v in rates.items()
        }
        out["wal_push_ratio_encrypted_vs_plain"] = round(
            _median(rates["encrypted"]) / _median(rates["plain"]), 3
        )

        # backups: the same cluster switched between the two repositories
        times: dict[str, list[float]] = {"plain": [], "encrypted": []}
        stored: dict[str, int] = {}
        for run in range(runs):
            kinds = ["plain", "encrypted"] if run % 2 == 0 else ["encrypted", "plain"]
            for kind in kinds:
                edit_policy.switch_repository("benc", RepositoryUrl.parse(urls[kind]))
                started = time.perf_counter()
                manifest = bk.run(Steps(), bk.BackupRequest("benc", f"b-{kind}-{run}"))
                times[kind].append(round(time.perf_counter() - started, 2))
                stored[kind] = manifest.stored_size or 0
        db_mb = out["database_bytes"] / 2**20
        out["backup_seconds"] = {k: {"median": _median(v), "all": v} for k, v in times.items()}
        out["backup_mb_per_second"] = {
            kind: round(db_mb / _median(v), 1) for kind, v in times.items()
        }
        out["backup_ratio_encrypted_vs_plain"] = round(
            _median(times["encrypted"]) / _median(times["plain"]), 3
        )
        out["backup_stored_bytes"] = stored
        out["cipher_alone_mb_per_second"] = round(_cipher_rate(), 1)
        out["load_average_at_end"] = os.getloadavg()
    finally:
        for cl in cluster.Cluster.all():
            try:
                cl.remove()
            except Exception:  # noqa: S110 - a serverless cluster has no server to stop
                pass
        shutil.rmtree(home, ignore_errors=True)
    path = save(out, f"encryption-scale{scale}")
    print(json.dumps(out, indent=1))
    print(path)
    return out


def cli(argv: list[str]) -> int:
    numbers = [int(a) for a in argv]
    main(*numbers[:3])
    return 0


if __name__ == "__main__":
    raise SystemExit(cli(sys.argv[1:]))
