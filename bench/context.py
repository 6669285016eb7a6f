"""What every measurement shares: the scratch directory, the source cluster, the results, and how
to run pgpitr's engine in a child process (``bench.runner``) and time it."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.proc import ROOT, User, make_dir, remove_tree, stop_postmasters_under, timed
from bench.results import Results
from bench.source import NAME, SourceCluster


@dataclass
class Context:
    work: Path
    user: User
    source: SourceCluster
    results: Results
    runs: int
    segments: int
    quick: bool
    profile_dir: Path | None = None

    @contextmanager
    def rundir(self, name: str) -> Iterator[Path]:
        """A fresh directory for one run, reachable by the server's account; removed after, with
        any server left running under it."""
        path = self.work / name
        remove_tree(path)
        make_dir(path, self.user, 0o755)
        try:
            yield path
        finally:
            stop_postmasters_under(path)
            remove_tree(path)

    def repo_dir(self, rundir: Path) -> Path:
        return make_dir(rundir / "repo", self.user, 0o750)

    def runner(
        self,
        verb_args: list[str],
        rundir: Path,
        *,
        home: Path,
        env: dict[str, str] | None = None,
        profile: str | None = None,
        timeout: float = 7200,
    ) -> dict[str, Any]:
        """Run ``python -m bench.runner``; return its record plus the wall time and tree RSS."""
        out = rundir / "runner.json"
        argv = [sys.executable, "-m", "bench.runner", "--out", str(out)]
        if profile and self.profile_dir is not None:
            argv += ["--profile", str(self.profile_dir / f"cprofile-{profile}.txt")]
        child_env = {
            "PGPITR_HOME": str(home),
            "PYTHONPATH": str(ROOT),
            **(env or {}),
        }
        result = timed(
            argv + verb_args,
            env=child_env,
            timeout=timeout,
            cwd=ROOT,
            log=rundir / "runner",
        )
        record = json.loads(out.read_text())
        record["seconds"] = result.seconds
        record["peak_rss_kb"] = result.peak_rss_kb
        return record

    def pgpitr_backup(
        self,
        rundir: Path,
        url: str,
        *,
        name: str,
        workers: int,
        level: int = 3,
        log_backup: bool = True,
        env: dict[str, str] | None = None,
        profile: str | None = None,
    ) -> dict[str, Any]:
        args = [
            "backup",
            "--cluster",
            NAME,
            "--repo",
            url,
            "--name",
            name,
            "--workers",
            str(workers),
            "--level",
            str(level),
            "--log-backup" if log_backup else "--no-log-backup",
        ]
        return self.runner(args, rundir, home=self.source.home, env=env, profile=profile)


def order(variants: list[Any], run: int) -> list[Any]:
    """Alternate the order of the variants from one run to the next."""
    return variants if run % 2 == 0 else list(reversed(variants))


@contextmanager
def environ_with(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables in this process for a block (the engine reads AWS keys)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
