"""The agent's supervisor: a ``Receiver`` for each cluster of this host that wants streaming,
none for the others, in a daemon thread (``start``)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from pgpitr import policy_store
from pgpitr.postgres.cluster import Cluster
from pgpitr.wal.stream.files import streaming
from pgpitr.wal.stream.receiver import TICK, Receiver, Retained

log = logging.getLogger(__name__)


def wanted(cluster: Cluster) -> bool:
    """Whether this host's agent streams ``cluster``: of this host, not being restored nor a
    drill's scratch cluster, log backup on with method stream, and running."""
    policy = policy_store.agent_policy(cluster)
    return policy is not None and streaming(policy) and cluster.is_running()


class Supervisor:
    """A Receiver for every cluster ``wanted`` says, none for the others."""

    def __init__(
        self, on_retained: Retained | None = None, tick: float = TICK, home: Path | None = None
    ) -> None:
        self.on_retained = on_retained
        self.tick = tick
        self.home = home  # PGPITR_HOME's clusters when None, read at each pass
        self.receivers: dict[str, Receiver] = {}

    def reconcile(self) -> None:
        names = set()
        for cluster in Cluster.all(self.home):
            try:
                if wanted(cluster):
                    names.add(cluster.name)
            except Exception as exc:  # one broken cluster does not stop the others
                log.warning("streaming of %s not checked: %s", cluster.name, exc)
        for name in sorted(names - self.receivers.keys()):
            receiver = Receiver(name, self.on_retained, self.tick, self.home)
            self.receivers[name] = receiver
            receiver.start()
        for name in sorted(self.receivers.keys() - names):
            self.receivers.pop(name).stop()
        for name, receiver in list(self.receivers.items()):
            if not receiver.thread.is_alive():  # its cluster went away
                del self.receivers[name]

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    self.reconcile()
                except Exception as exc:
                    log.warning("streaming supervisor: %s", exc)
                stop.wait(self.tick)
        finally:
            for receiver in self.receivers.values():
                receiver.stopping.set()
            for receiver in self.receivers.values():
                receiver.stop()
            self.receivers.clear()


def start(
    on_retained: Retained | None = None, tick: float = TICK, home: Path | None = None
) -> tuple[threading.Thread, threading.Event, Supervisor]:
    """The supervisor in a daemon thread; set the event (and join) to stop every receiver."""
    supervisor = Supervisor(on_retained, tick, home)
    stop = threading.Event()
    thread = threading.Thread(
        target=supervisor.run, args=(stop,), name="pgpitr-walstream", daemon=True
    )
    thread.start()
    return thread, stop, supervisor
