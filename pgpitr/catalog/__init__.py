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

A window never claims a time a restore cannot reach (window.py says how); a backup counts in
it only with its whole lineage (backups.py).  Everything here reads the repository; nothing here
writes WAL (pgpitr/wal/ does) or runs an operation (pgpitr/operations/ does).
"""
