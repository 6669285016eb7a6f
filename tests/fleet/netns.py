"""Hosts as Linux network namespaces on this machine (root only).

A bridge in the root namespace holds the fleet's own address (its Prefect server and S3 endpoint
listen there); each host is a namespace with its loopback and one address on the bridge, and no
route beyond the bridge's subnet: what a host sends reaches its own loopback or the fleet's
addresses, nothing else.  The file system is shared: each host keeps its own PGPITR_HOME."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def _ip(*args: str, namespace: str | None = None, check: bool = True) -> str:
    where = ["-n", namespace] if namespace else []
    done = subprocess.run(["ip", *where, *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(where + list(args))}: {done.stderr.strip()}")
    return done.stdout


@dataclass(frozen=True)
class Host:
    name: str
    namespace: str
    address: str
    #: (SOURCE, TARGET): every command of this host sees the directory SOURCE at TARGET, a
    #: path all hosts share (each machine has its own /var/lib/pgpitr); "" for none
    home_mount: tuple[str, str] = ("", "")

    def command(self, argv: list[str]) -> list[str]:
        """ARGV run inside this host's network namespace (and its mount, in a mount namespace
        of its own: `ip netns exec` makes one per command, so no other host sees it)."""
        where = ["ip", "netns", "exec", self.namespace]
        source, target = self.home_mount
        if not source:
            return [*where, *argv]
        script = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
        return [*where, "sh", "-c", script, "sh", source, target, *argv]

    def with_home(self, source: Path, target: Path) -> Host:
        return dataclasses.replace(self, home_mount=(str(source), str(target)))

    def routes(self) -> list[str]:
        return [line for line in _ip("route", "show", namespace=self.namespace).splitlines()]


@dataclass(frozen=True)
class Network:
    bridge: str
    #: the root namespace's address on the bridge: where the fleet's server and S3 listen
    address: str
    hosts: dict[str, Host]


@contextlib.contextmanager
def network(names: list[str], subnet: str = "10.213.0") -> Iterator[Network]:
    """A namespace per name, each on the bridge at SUBNET.2, .3, …; all removed after, with
    every process still running in them."""
    tag = str(os.getpid() % 100000)
    bridge = f"pgpbr{tag}"
    made: list[str] = []
    try:
        _ip("link", "add", bridge, "type", "bridge")
        _ip("addr", "add", f"{subnet}.1/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        hosts = {}
        for number, name in enumerate(names, start=2):
            namespace = f"pgpitr-{name}-{tag}"
            _ip("netns", "add", namespace)
            made.append(namespace)
            outer, inner = f"pgp{tag}o{number}", f"pgp{tag}i{number}"  # 15 characters at most
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", namespace)
            _ip("link", "set", outer, "master", bridge)
            _ip("link", "set", outer, "up")
            _ip("addr", "add", f"{subnet}.{number}/24", "dev", inner, namespace=namespace)
            _ip("link", "set", inner, "up", namespace=namespace)
            _ip("link", "set", "lo", "up", namespace=namespace)
            hosts[name] = Host(name, namespace, f"{subnet}.{number}")
        yield Network(bridge, f"{subnet}.1", hosts)
    finally:
        for namespace in made:
            for pid in _ip("netns", "pids", namespace, check=False).split():
                with contextlib.suppress(OSError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _ip("netns", "delete", namespace, check=False)  # its veth ends go with it
        _ip("link", "delete", bridge, check=False)
