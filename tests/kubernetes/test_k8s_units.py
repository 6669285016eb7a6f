"""The pure parts: patch arithmetic, --set parsing, platform detection, redaction."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from pgpitr.errors import InvalidInput
from pgpitr.kubernetes import csi_s3, snapshot
from pgpitr.kubernetes.apply import changes, covers, revert_patch
from pgpitr.kubernetes.manifests import to_yaml
from pgpitr.kubernetes.settings import CSI_S3_KEYS, check, parse_set, split_secrets


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies it."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


scalars = st.one_of(st.integers(), st.text(max_size=3), st.booleans())
documents = st.recursive(
    scalars | st.lists(scalars, max_size=3),
    lambda children: st.dictionaries(st.sampled_from("abcd"), children, max_size=4),
    max_leaves=12,
).filter(lambda d: isinstance(d, dict))


@given(documents, documents)
def test_changes_then_revert_round_trip(actual: dict, desired: dict) -> None:
    patch = changes(actual, desired)
    patched = merge_patch(actual, patch)
    assert covers(patched, desired)
    assert changes(patched, desired) == {}  # a second run sends nothing
    assert merge_patch(patched, revert_patch(actual, patch)) == actual


def test_server_defaults_in_lists_do_not_count_as_changes() -> None:
    desired = {"spec": {"containers": [{"name": "c", "image": "i"}], "replicas": 2}}
    actual = {"spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicy": "Always"}],
                       "replicas": 2, "revisionHistoryLimit": 10}}  # fmt: skip
    assert changes(actual, desired) == {}
    assert changes(actual, {"spec": {"replicas": 3}}) == {"spec": {"replicas": 3}}


def test_parse_set() -> None:
    values = ["secret.endpoint=https://s3,secret.region=eu-1", "storageClass.singleBucket=a\\,b"]
    assert parse_set(values) == {
        "secret.endpoint": "https://s3",
        "secret.region": "eu-1",
        "storageClass.singleBucket": "a,b",
    }
    assert parse_set(["secret.secretKey=abc=def"]) == {"secret.secretKey": "abc=def"}
    with pytest.raises(InvalidInput, match="item 2 of 2 is not key=value") as failure:
        parse_set(["a=1,hunter2"])
    assert "hunter2" not in str(failure.value)


def test_check_fills_defaults_and_takes_secrets_from_the_environment() -> None:
    given = {"secret.endpoint": "https://s3", "storageClass.singleBucket": "demo"}
    env = {"PGPITR_S3_ACCESS_KEY": "a", "PGPITR_S3_SECRET_KEY": "b"}
    assert check(given, CSI_S3_KEYS, what="csi-s3", env=env) == {
        **given, "secret.region": "", "storageClass.name": "csi-s3",
    }  # fmt: skip
    public, secrets = split_secrets({**given, "secret.accessKey": "a"}, CSI_S3_KEYS)
    assert public == given and secrets == {"PGPITR_S3_ACCESS_KEY": "a"}


@pytest.mark.parametrize(
    ("node", "platform"),
    [
        ({"spec": {"providerID": "aws:///eu-west-1b/i-0123"}}, "eks"),
        ({"spec": {"providerID": "gce://proj/europe-west1-b/gke-node"}}, "gke"),
        ({"spec": {"providerID": "azure:///subscriptions/x/resourceGroups/y"}}, "aks"),
        ({"spec": {"providerID": "cn-hangzhou.i-bp1abc"}}, "ack"),
        ({"metadata": {"labels": {"alibabacloud.com/nodepool-id": "np"}}}, "ack"),
    ],
)
def test_detect_platform(node: dict, platform: str) -> None:
    assert snapshot.detect_platform([node]) == platform
    assert snapshot.snapshot_class(platform)["driver"] == snapshot.PLATFORM_DRIVERS[platform]


def test_undetectable_platform_says_how_to_set_it() -> None:
    with pytest.raises(InvalidInput, match="kind://") as failure:
        snapshot.detect_platform([{"spec": {"providerID": "kind://docker/kind/kind-worker"}}])
    assert "--set platform=eks|gke|ack|aks" in str(failure.value)


def test_yaml_redacts_secret_values() -> None:
    text = to_yaml([csi_s3.secret("AKIA123", "s3cr3t", "https://s3"), csi_s3.storage_class("b")])
    docs = list(yaml.safe_load_all(text))
    assert set(docs[0]["data"].values()) == {"<redacted>"}
    assert "AKIA123" not in text and "s3cr3t" not in text
    assert docs[1]["parameters"]["bucket"] == "b"
