"""flows/registry.py is the one list of flows: the CLI runs them by its names, serving serves
its entries, and prefect.yaml deploys the same ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deployments import prefect_yaml
from flows import registry
from pgpitr.errors import PitrError

REPO_ROOT = Path(__file__).resolve().parents[2]


def _deployed(name: str) -> set[str]:
    spec = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    return {
        d["entrypoint"]
        for d in spec["deployments"]
        if d["name"] == name and d["entrypoint"].startswith("flows/")
    }


def test_prefect_yaml_deploys_exactly_the_registry() -> None:
    served = [e for e in registry.FLOWS if e.served]
    assert _deployed("pgpitr") == {e.path for e in served if not e.kubernetes}
    assert _deployed("pgpitr-kubernetes") == {e.path for e in served}


def test_every_entry_loads_a_flow_of_its_name() -> None:
    for entry in registry.FLOWS:
        assert registry.load(entry.name).name == entry.name


def test_serving_covers_every_served_entry_and_only_those() -> None:
    names = {e.name for e in registry.served()}
    assert "create-account" not in names  # its password travels only in the CLI's process
    assert names == {e.name for e in registry.FLOWS if e.served}


def test_an_unknown_flow_name_is_refused() -> None:
    with pytest.raises(PitrError, match="no pgpitr flow is named 'bakup'"):
        registry.load("bakup")


def test_prefect_yaml_is_what_the_registry_writes() -> None:
    assert (REPO_ROOT / "prefect.yaml").read_text() == prefect_yaml.render(), (
        "prefect.yaml differs from the registry: python -m deployments.prefect_yaml --write"
    )
    assert prefect_yaml.main(["--check"]) == 0


def test_a_new_flow_is_deployed_to_both_pools_and_a_kubernetes_one_to_its_pool_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    added = (
        registry.FlowEntry("vacuum", "flows.vacuum:vacuum"),
        registry.FlowEntry("addon-list", "flows.setup:list_addons", kubernetes=True),
    )
    monkeypatch.setattr(prefect_yaml, "FLOWS", registry.FLOWS + added)
    spec = yaml.safe_load(prefect_yaml.render())
    pools = {
        entrypoint: {d["name"] for d in spec["deployments"] if d["entrypoint"] == entrypoint}
        for entrypoint in ("flows/vacuum.py:vacuum", "flows/setup.py:list_addons")
    }
    assert pools == {
        "flows/vacuum.py:vacuum": {"pgpitr", "pgpitr-kubernetes"},
        "flows/setup.py:list_addons": {"pgpitr-kubernetes"},
    }
