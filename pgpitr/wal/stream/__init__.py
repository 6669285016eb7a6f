"""Streaming WAL into the repository: ``pg_receivewal`` under the agent, on a slot pgpitr owns.

With ``schedule.logfile.method=stream`` the agent (deployments/agent.py) runs a ``Supervisor``
in a daemon thread: one ``Receiver`` per cluster of its host that wants streaming, each with

- a ``pg_receivewal`` run as the server's OS user with the server's own binaries, on the physical
  replication slot ``pgpitr_walstream`` (so the server keeps every byte the receiver has not
  flushed, across a kill -9, an agent stopped for an hour or a repository outage), writing into
  ``spool/stream`` under the cluster's directory (postgres/conf.py ``stream_spool_dir``);
  restarted with a growing pause whenever it ends;
- an upload pass about every second: each completed segment (and history file) goes into the
  repository through ``wal.push_file``, the same path as ``wal-push`` (same names, checksums,
  and "same content succeeds, different content fails and the stored copy is kept"), and leaves
  the spool only once stored; the ``.partial`` segment being written is uploaded when it grew,
  as ``SEGMENT.EXTENT.partial`` (``wal.streamed_partial_name``: EXTENT is how many bytes of it
  were written, so the newest is the longest), and the previous partial of that segment is
  removed (at most once a second, within POLL of a quiet segment growing); when the segment
  completes, every partial of it is removed.

``archive_command`` stays on in stream mode, as a fallback, as Barman keeps both: with the agent
stopped or the receiver failing, segments still reach the repository when they fill or at
archive_timeout, and the history and backup-label files keep arriving the way they always
did.  pg_receivewal writes no backup-label file; it fetches the history file of the timeline it
starts on (TIMELINE_HISTORY), which the upload pass pushes like a segment, but a new timeline
begins at a promotion, while no receiver streams that server, so archive_command stores it first
and the receiver's push finds the same bytes.  Both paths store a completed segment
under the same name with the same bytes (the walsender sends the server's own WAL file), so the
second one finds the first one's object and succeeds without writing.

With ``schedule.logfile.synchronous=true`` the receiver runs with ``--synchronous`` (it flushes
and reports each write at once) and the server's ``synchronous_standby_names`` names its
application_name: a commit returns only when its WAL is on the spool's disk.  The cost is a
round trip and an fsync per commit, and while no receiver runs every commit waits: turning
synchronous off is the way out (``describe`` says so loudly).

A Patroni cluster's slot is one of Patroni's permanent slots (postgres/slots.py), on every
member; the receiver streams from the member Patroni names primary (asked at most every second),
restarts towards another as soon as it is named, and leaves an older timeline's files once they
are stored (``Receiver._leave_old_timelines``).  Synchronous streaming is refused there.

Nothing here imports Prefect: the agent passes ``on_retained``, called when the slot holds back
more WAL than the policy's ``stream.maxRetained``, and turns it into an event.

``supervisor`` holds the agent's supervisor, ``receiver`` one cluster's receiver, ``segments`` a
segment being written and its partial, ``files`` the spool and the status file, ``describe``
describe's streaming block.
"""

from __future__ import annotations

from pgpitr.wal.stream.describe import describe_fields
from pgpitr.wal.stream.files import clear_spool, spool_dir
from pgpitr.wal.stream.supervisor import Supervisor, start

__all__ = ["Supervisor", "clear_spool", "describe_fields", "spool_dir", "start"]
