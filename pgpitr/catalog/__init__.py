"""The catalog: what the repository holds for one cluster (backups, the WAL chain, the recoverable
window) and what it says about it.

``backups``         the backups and their lineages
``walindex``        the WAL archive, read through its stored index (pgpitr/wal/index/)
``timelines``       timeline paths and the end of a WAL chain
``records``         commits and transactions in the archived WAL (pg_waldump)
``window``          the recoverable window
``reach``           which backup reaches a restore target
``source``          the source of a restore (a cluster here, or a stanza in a repository)
``restore_points``  restore points recorded in the repository
``reindex``         rebuilding a stanza's index

The window of a backup runs from its stop time (the consistency point, measured after
pg_basebackup returned, so never early) to the last commit found in the unbroken chain of archived
segments that starts at the backup's start segment.  PostgreSQL (13+) refuses to finish a recovery
whose target time it did not reach, and it reaches a time only by seeing a commit after it (at or
after it, exclusive: the restore plan refuses the last commit's own time inclusive): so the
window ends at the last commit, and a missing segment ends it at the last commit before
the gap.  The window never claims a time a restore cannot reach.

The other targets are positions in that same chain (``Chain``): an LSN or a restore point is
reachable from a backup when it lies between the backup's stop LSN and the end of its chain, on its
timeline path; a transaction id is found by reading the chain's commit records
(``find_transaction``), and its commit's LSN decides like an LSN.

An incremental backup (PostgreSQL 17+) restores only with every backup it was taken against:
its *lineage* (``lineage``), from the full backup through each parent to itself, oldest first.
("Chain" above is a backup's WAL; the lineage is its backups.)  A backup counts in the window
only when every link of its lineage is Completed and its data object is in the repository
(``unusable`` says why one does not); ``dependents`` are the backups whose lineage runs through
a backup, which is deleted or expired only together with them.
"""
