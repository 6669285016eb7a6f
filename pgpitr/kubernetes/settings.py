"""``--set key=value`` settings: the keys each step takes, parsing and checking them.

The same dotted keys as the KubeBlocks/kbcli charts (``secret.accessKey``, ``storageClass.
singleBucket``, ``dataProtection.backupPVCName``...).  Secret keys may also come from an
environment variable, and are never part of a flow's parameters: ``split_secrets`` keeps them apart.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from pgpitr.errors import InvalidInput
from pgpitr.kubernetes.snapshot import PLATFORM_DRIVERS


@dataclass(frozen=True)
class Key:
    name: str
    help: str
    default: str | None = None  # None and not required: optional, no value
    required: bool = False
    choices: tuple[str, ...] = ()
    env: str | None = None  # environment variable that may supply a secret value

    @property
    def secret(self) -> bool:
        return self.env is not None


_BOOL = ("true", "false")
SNAPSHOT_KEYS = (
    Key(
        "platform",
        "cloud whose CSI driver the default VolumeSnapshotClass uses "
        "(detected from the nodes when unset)",
        choices=tuple(PLATFORM_DRIVERS),
    ),
)
CSI_S3_KEYS = (
    Key("secret.accessKey", "S3 access key ID", required=True, env="PGPITR_S3_ACCESS_KEY"),
    Key("secret.secretKey", "S3 secret access key", required=True, env="PGPITR_S3_SECRET_KEY"),
    Key(
        "secret.endpoint", "S3 endpoint URL, e.g. https://s3.us-east-1.amazonaws.com", required=True
    ),
    Key("secret.region", "S3 region", default=""),
    Key("storageClass.singleBucket", "the bucket every csi-s3 volume lives in", required=True),
    Key("storageClass.name", "name of the csi-s3 StorageClass", default="csi-s3"),
)
STORAGE_CLASS_KEYS = (
    Key("defaultStorageClass.name", "the storage class to make the only default", default="ebs-sc"),
    Key(
        "defaultStorageClass.create",
        "EBS volume type to create that class with (empty: it must exist)",
        default="gp3",
    ),
)
DATA_PROTECTION_KEYS = (
    Key("dataProtection.backupPVCName", "PVC that backups are written to", default="backup-data"),
    Key(
        "dataProtection.backupPVCStorageClassName",
        "storage class of the backup PVC",
        default="csi-s3",
    ),
    Key(
        "dataProtection.backupPVCInitCapacity", "requested size of the backup PVC", default="100Gi"
    ),
    Key(
        "dataProtection.enableVolumeSnapshot",
        "back up with volume snapshots where possible",
        default="false",
        choices=_BOOL,
    ),
)
SETUP_KEYS = SNAPSHOT_KEYS + STORAGE_CLASS_KEYS + CSI_S3_KEYS + DATA_PROTECTION_KEYS

_SPLIT = re.compile(r"(?<!\\),")


def parse_set(values: Iterable[str]) -> dict[str, str]:
    """``["a=1,b=2", "c=3"]`` -> ``{"a": "1", "b": "2", "c": "3"}``; ``\\,`` keeps a comma."""
    settings: dict[str, str] = {}
    for value in values:
        for position, item in enumerate(_SPLIT.split(value), start=1):
            if not item.strip():
                continue
            key, sep, val = item.partition("=")
            if not sep or not key.strip():  # never echo the item: it may be a secret
                raise InvalidInput(
                    f"--set item {position} of {value.count(',') + 1} is not key=value",
                    hint="write --set key=value,key2=value2 (\\, for a comma inside a value)",
                )
            settings[key.strip()] = val.replace("\\,", ",")
    return settings


def describe(keys: Sequence[Key]) -> str:
    return ", ".join(k.name for k in keys)


def check(
    given: Mapping[str, str],
    keys: Sequence[Key],
    *,
    what: str,
    env: Mapping[str, str] | None = None,
    require: bool = True,
) -> dict[str, str]:
    """Validate keys and choices; fill defaults; with ``require``, insist on required keys.

    Secret keys count as given when their environment variable is set; their values are
    returned only when they came from ``given``.
    """
    env = os.environ if env is None else env
    known = {k.name: k for k in keys}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise InvalidInput(
            f"unknown --set key{'s' if len(unknown) > 1 else ''} for {what}: {', '.join(unknown)}",
            hint=f"valid keys: {describe(keys)}",
        )
    settings: dict[str, str] = {}
    missing = []
    for key in keys:
        if key.name in given:
            value = given[key.name]
            if key.choices and value not in key.choices:
                raise InvalidInput(
                    f"{key.name}={value!r} is not valid for {what}",
                    hint=f"{key.name} takes one of: {', '.join(key.choices)}",
                )
            settings[key.name] = value
        elif key.default is not None:
            settings[key.name] = key.default
        elif key.required and not (key.env and env.get(key.env)):
            missing.append(key)
    if missing and require:
        names = ", ".join(k.name + (f" (or ${k.env})" if k.env else "") for k in missing)
        raise InvalidInput(f"{what} needs {names}", hint=f"valid keys: {describe(keys)}")
    return settings


def split_secrets(
    settings: Mapping[str, str], keys: Sequence[Key]
) -> tuple[dict[str, str], dict[str, str]]:
    """(public settings, {environment variable: secret value}) — the second never a parameter."""
    secret_keys = {k.name: k.env for k in keys if k.env}
    public = {k: v for k, v in settings.items() if k not in secret_keys}
    secrets = {
        secret_keys[k]: v for k, v in settings.items() if k in secret_keys and secret_keys[k]
    }
    return public, secrets


def refuse_secrets(settings: Mapping[str, str], keys: Sequence[Key]) -> None:
    """Flows call this: a secret must reach them through the environment or a Secret block."""
    leaked = sorted(k.name for k in keys if k.env and k.name in settings)
    if leaked:
        envs = ", ".join(k.env for k in keys if k.env and k.name in leaked)
        raise InvalidInput(
            f"{', '.join(leaked)} must not be flow parameters (they would show in the UI)",
            hint=f"set {envs} in the flow's environment, or name a Prefect Secret block",
        )


def validate(
    given: Mapping[str, str], keys: Sequence[Key], *, what: str, secrets_elsewhere: bool = False
) -> dict[str, str]:
    """``check``; with ``secrets_elsewhere`` (dry run, Secret block) secret keys are optional."""
    if secrets_elsewhere:
        keys = tuple(replace(k, required=False) if k.secret else k for k in keys)
    return check(given, keys, what=what)
