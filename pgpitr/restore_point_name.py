"""A restore point's name, as pg_create_restore_point takes it and a restore target names it:
a module of its own, so that reading restore points does not import the restore target's
model (pydantic) with it."""

from __future__ import annotations

import re

POINT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", re.ASCII)
POINT_NAME_RULE = "1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit"
