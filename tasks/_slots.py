"""One backup and one restore per cluster at a time, across every process and worker.

A deployment's own concurrency limit counts the runs of that deployment, and pgpitr's
deployments serve every cluster; so the limit per cluster is a Prefect global concurrency limit
named after it and its host (``pgpitr-backup-db1.my-pg``, limit 1, created on first use and
visible in the UI).  A second backup waits for its turn, up to PGPITR_BACKUP_WAIT_TIMEOUT
(pgpitr/waits.py: an hour by default), then fails saying what held it; a second restore from
the same source is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from pgpitr import waits
from pgpitr.errors import Busy
from tasks.naming import qualified

LEASE_SECONDS = 60  # the shortest lease Prefect's API accepts


def slot_name(kind: str, cluster: str, host: str | None = None) -> str:
    """``pgpitr-backup-HOST.NAME``: per cluster of a host (this one by default; a limit's name
    takes no '/')."""
    return f"pgpitr-{kind}-{qualified(cluster, host)}"


@contextmanager
def cluster_slot(kind: str, cluster: str, *, wait: bool) -> Iterator[None]:
    from prefect.client.orchestration import get_client
    from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError
    from prefect.concurrency.sync import concurrency

    name = slot_name(kind, cluster)
    # read before the API is asked anything: a bad setting fails at once, not after the wait
    timeout = waits.BACKUP_SLOT.seconds() if wait else None
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, 1)
    # Refusing asks once (no retry on 423 Locked) rather than with a short timeout, which a
    # busy API server could exceed while the slot is free.
    with ExitStack() as stack:
        try:
            stack.enter_context(
                concurrency(
                    name,
                    occupy=1,
                    timeout_seconds=timeout,
                    max_retries=None if wait else 0,
                    strict=True,
                    # renewed while held; a killed holder's slot frees within a minute and the
                    # server's next lease sweep (15 s), not Prefect's default five minutes
                    lease_duration=LEASE_SECONDS,
                )
            )
        except TimeoutError:
            raise Busy(
                f"a {kind} of cluster {cluster!r} waited {waits.shown(timeout or 0)} for the "
                f"{kind} slot {name} and gave up: another {kind} of it held the slot all along",
                hint=f"see the running {kind}'s flow run in the Prefect UI, or free a stuck "
                f"slot in its Concurrency page; {waits.BACKUP_SLOT.env} sets the wait "
                f"({waits.shown(waits.BACKUP_SLOT.default)} by default)",
                transient=False,
            ) from None
        except ConcurrencySlotAcquisitionError as exc:
            status = getattr(getattr(exc.__cause__, "response", None), "status_code", None)
            if status != 423:
                raise
            raise Busy(
                f"a {kind} of cluster {cluster!r} is already running",
                hint="wait for it to finish (see its flow run in the Prefect UI)",
            ) from None
        yield
