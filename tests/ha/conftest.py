"""Fixtures of the HA tests: a real three-member Patroni cluster (tests/ha/patroni.py).

``make_patroni_cluster(bindir=..., scope=...)`` starts a cluster of its own for one test
(Debian's PostgreSQL 15 unless asked), as many as it is asked for.  Every
process they started is stopped at teardown, whether the test passed or not; a failed test's
report carries the tail of each member's Patroni log."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.ha.patroni import PatroniCluster, require_patroni


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def make_patroni_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., PatroniCluster]]:
    """Start a cluster: ``make_patroni_cluster(bindir=..., scope=..., synchronous_mode=...)``
    (PatroniCluster's keywords); each is stopped after the test."""
    require_patroni()
    clusters: list[PatroniCluster] = []

    def make(**options) -> PatroniCluster:
        scope = options.setdefault("scope", f"ha{len(clusters) + 1}")
        cluster = PatroniCluster(tmp_path_factory.mktemp(f"patroni-{scope}"), **options)
        clusters.append(cluster)
        return cluster.start()

    try:
        yield make
    finally:
        failed = request.node.stash.get(_FAILED, False)
        for cluster in clusters:
            if failed:
                print(cluster.logs())
            cluster.stop(graceful=False)
