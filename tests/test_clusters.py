"""pgpitr/operations/edit_policy.py and pgpitr/cluster_repository.py without a server: what a
policy change switches, and where the backups of a cluster are when the cluster is gone."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest

from pgpitr import policy as pol
from pgpitr import repository as pgpitr_repository
from pgpitr.catalog import source as catalog_source
from pgpitr.errors import ClusterStateError, InvalidInput, NotFound
from pgpitr.operations import edit_policy
from tests.conftest import free_port


def _policy(**changes) -> pol.BackupPolicy:
    base = pol.BackupPolicy(cluster="my-pg", repository="file:///var/lib/repo", create_time="")
    return dataclasses.replace(base, **changes)


def test_a_repository_switch_compares_urls_not_their_spelling() -> None:
    same = edit_policy.PolicyChange(_policy(), _policy(repository="file://localhost/var/lib/repo"))
    assert not same.repository_switch
    assert not edit_policy.PolicyChange(_policy(), _policy(repository="")).repository_switch
    other = edit_policy.PolicyChange(_policy(), _policy(repository="file:///srv/other"))
    assert other.repository_switch


def test_the_log_backup_switch_is_a_change_of_the_flag() -> None:
    assert edit_policy.PolicyChange(_policy(), _policy(logfile_enabled=True)).log_backup_switch
    assert not edit_policy.PolicyChange(_policy(), _policy(ttl="3d")).log_backup_switch


def test_an_unknown_cluster_without_backups_is_not_a_source(home: Path) -> None:
    with pytest.raises(NotFound, match="cluster 'gone' is unknown and the repository"):
        catalog_source.resolve_source("gone")


def test_a_deleted_clusters_backups_are_found_in_the_repository_named(home: Path) -> None:
    repo_url = f"file://{home / 'elsewhere'}"
    repo = pgpitr_repository.open_repository(repo_url)
    repo.put_json("gone/archive.info", {"system_identifier": "1"})
    source = catalog_source.resolve_source("gone", pgpitr_repository.RepositoryUrl.parse(repo_url))
    assert (source.cluster, str(source.repository)) == ("gone", repo_url)
    assert source.open().exists("gone/archive.info")


def test_new_clusters_take_their_port_from_pgpitr_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    from pgpitr.postgres import ports

    port = free_port()
    monkeypatch.setenv("PGPITR_PORTS", f"{port}-{port}")
    assert ports.free_port(set()) == port
    with pytest.raises(ClusterStateError, match=f"no free TCP port between {port} and {port}"):
        ports.free_port({port})
    for bad in ("5433", "7000-6000", "80-90", "a-b"):
        monkeypatch.setenv("PGPITR_PORTS", bad)
        with pytest.raises(InvalidInput, match="cannot read \\$PGPITR_PORTS"):
            ports.free_port(set())


def test_a_new_clusters_policy_avoids_the_minutes_of_this_hosts_clusters(home: Path) -> None:
    from pgpitr import policy_store
    from pgpitr.postgres.cluster import Cluster
    from pgpitr.state import ClusterState

    def saved(name: str, **fields: object) -> None:
        ClusterState(
            name=name,
            platform="local",
            port=free_port(),
            repository=f"file://{home}/repo",
            bindir="/usr/lib/postgresql/15/bin",
            os_user="postgres",
            home=str(home),
            **fields,
        ).save()
        policy_store.save_policy(Cluster.get(name), policy_store.new_policy(name, create_time=""))

    alone = policy_store.new_policy("new-pg", create_time="")
    minute = alone.cron.split()[0]
    assert alone.cron == f"{minute} 18 * * 0" and alone.drill_cron == f"{minute} 3 * * *"
    # three names whose own minute is new-pg's: alone, each would take that minute
    names = (f"pg{n}" for n in itertools.count())
    rivals = list(
        itertools.islice(
            (
                n
                for n in names
                if pol.placed(pol.BackupPolicy(n, create_time=""), []).cron == alone.cron
            ),
            3,
        )
    )
    for name in rivals:
        saved(name)
    # another host's cluster in the same home: its agent, not this one, runs its schedules
    saved("elsewhere", host="other-host")
    minutes = [policy_store.load_policy(Cluster.get(name)).cron.split()[0] for name in rivals]
    assert minutes[0] == minute and len(set(minutes)) == 3, minutes
    placed = policy_store.new_policy("new-pg", create_time="").cron.split()[0]
    assert placed not in minutes
