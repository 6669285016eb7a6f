"""Tasks of the repository's maintenance (pgpitr/catalog/reindex.py composes them)."""

from __future__ import annotations

from pgpitr.catalog import reindex
from tasks._common import RETRYING, step_task

find_stanzas = step_task(reindex.find_stanzas, "find-stanzas", **RETRYING)
reindex_stanza = step_task(reindex.reindex_stanza, "reindex-stanza", **RETRYING)
