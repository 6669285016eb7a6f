"""pgpitr/osutil.py: the process exit that skips the final garbage collection."""

from __future__ import annotations

import subprocess
import sys

import pytest

# garbage the final collection alone would reach: a cycle whose finalizer says so
_PROGRAM = """
import sys
{hook}
class Cycle:
    def __del__(self):
        sys.stdout.write("collected at exit\\n")
        sys.stdout.flush()
import gc
gc.disable()  # as if no collection had happened since
first, second = Cycle(), Cycle()
first.other, second.other = second, first
del first, second
import atexit
atexit.register(lambda: sys.stdout.write("atexit ran\\n"))
"""


@pytest.mark.parametrize("hooked", [False, True])
def test_the_exit_skips_the_final_collection_and_still_runs_atexit_handlers(
    hooked: bool,
) -> None:
    hook = "from pgpitr.osutil import no_collection_at_exit; no_collection_at_exit()"
    program = _PROGRAM.format(hook=hook if hooked else "")
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    assert "atexit ran" in result.stdout
    assert ("collected at exit" in result.stdout) is not hooked
