"""The backup policy of a cluster: schedule, TTL, WAL archiving and repository.

Pure data and validation; the caller stores it.  Settings use kbcli's keys, both for ``--set``
(``schedule.logfile.enable=true``) and for the YAML shown in ``$EDITOR``.  A ``BackupPolicy``
is validated when it is built (each value by its check in pgpitr/policy_values.py), so an
invalid one cannot exist.  The repository is held as a ``RepositoryUrl`` (None: the default
one) and is text only in the YAML and in ``to_dict``.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import KW_ONLY, dataclass
from datetime import UTC, datetime
from typing import Any

import pendulum
import yaml
from croniter import croniter

from pgpitr.errors import InvalidInput
from pgpitr.policy_values import OWN_MINUTE, SETTING_KEYS, SETTINGS, parse_size
from pgpitr.repository.url import RepositoryUrl

__all__ = [
    "BackupPolicy",
    "SETTING_KEYS",
    "apply_settings",
    "from_dict",
    "from_yaml",
    "next_run",
    "parse_size",
    "placed",
    "to_dict",
    "to_yaml",
]


@dataclass(frozen=True)
class BackupPolicy:
    """One cluster's backup policy.  ``create_time`` is an ISO timestamp set by the caller."""

    cluster: str
    _: KW_ONLY
    datafile_enabled: bool = True
    cron: str = "0 18 * * 0"
    timezone: str = "UTC"
    logfile_enabled: bool = False
    ttl: str = "7d"
    repository: RepositoryUrl | None = None
    compression: str = "zstd:3"
    #: incremental backups (PostgreSQL 17+) between the full ones, e.g. daily beside a weekly
    #: full: each against the newest usable backup
    incremental_enabled: bool = False
    incremental_cron: str = "0 18 * * 1-6"
    #: drills (pgpitr/operations/drill/): a restore into a scratch cluster, checked, timed,
    #: removed
    drill_enabled: bool = True
    drill_cron: str = "0 3 * * *"
    #: heartbeat rows in the cluster (pgpitr/heartbeat.py); a registered server's policy turns
    #: it off, since its database is its owner's
    heartbeat_enabled: bool = True
    #: an archive lag longer than this is an event (refresh-recoverable-window)
    rpo_max: str = "5m"
    #: how WAL reaches the repository: "archive" (archive_command: a segment when it fills or at
    #: archive_timeout) or "stream" (pg_receivewal under the agent, plus archive_command as a
    #: fallback: pgpitr/wal/stream/)
    logfile_method: str = "archive"
    #: stream mode only: commits wait until the receiver flushed their WAL (RPO 0; commits hang
    #: while the receiver is down)
    logfile_synchronous: bool = False
    #: WAL the receiver's replication slot may hold back on the server before it is an event
    stream_max_retained: str = "1GB"
    #: which member of an HA cluster backups read: primary, standby (refused without a
    #: streaming one) or prefer-standby (a streaming standby when there is one, else the
    #: primary); a single server is its own primary
    backup_source: str = "prefer-standby"
    create_time: str

    def __post_init__(self) -> None:
        if not isinstance(self.cluster, str) or not self.cluster.strip():
            raise InvalidInput(
                f"a backup policy needs a cluster name, got {self.cluster!r}: e.g. my-pg"
            )
        if not isinstance(self.create_time, str):
            raise InvalidInput(
                f"create_time {self.create_time!r} is not text: expected an ISO time like "
                "2023-04-17T11:56:40+00:00"
            )
        # Values are checked and brought to canonical form (a trimmed cron, the IANA spelling of
        # the zone) here, so every way of building a policy goes through the same rules.
        problems: list[str] = []
        for key, (attr, check) in SETTINGS.items():
            try:
                object.__setattr__(self, attr, check(getattr(self, attr)))
            except InvalidInput as exc:
                problems.append(f"{key}: {exc.message}")
        if not problems and self.logfile_synchronous and self.logfile_method != "stream":
            problems.append(
                "schedule.logfile.synchronous=true needs schedule.logfile.method=stream "
                "(archive_command cannot make commits wait)"
            )
        if problems:
            raise _refusal(problems)
        # H as a schedule's minute: the full backups' minute, or one the name decides
        own = _minute(self.cron)
        if own is None:
            own = zlib.crc32(self.cluster.encode()) % MINUTES
        for attr in _CRONS:
            object.__setattr__(self, attr, _own_minute(getattr(self, attr), own))

    @property
    def name(self) -> str:
        return f"{self.cluster}-postgresql-backup-policy"


_KEYS_BY_LOWER = {key.lower(): key for key in SETTINGS}
_SET_EXAMPLE = "e.g. --set schedule.logfile.enable=true,retention.ttl=7d"


def _refusal(problems: list[str]) -> InvalidInput:
    if len(problems) == 1:
        return InvalidInput(f"invalid backup policy: {problems[0]}")
    return InvalidInput("invalid backup policy:\n  - " + "\n  - ".join(problems))


def _unknown_key(key: str, where: str = "setting") -> str:
    close = difflib.get_close_matches(key, SETTING_KEYS, n=1)
    guess = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown {where} {key!r}{guess}: expected one of {', '.join(SETTING_KEYS)}"


class _Changes:
    """Checked values and problems, kept in the order the person wrote them."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.problems: list[str] = []

    def set(self, key: str, raw: Any) -> None:
        attr, check = SETTINGS[key]
        try:
            # The last value of a repeated key wins, as with kbcli's --set.
            self.values[attr] = check(raw)
        except InvalidInput as exc:
            self.problems.append(f"{key}: {exc.message}")

    def refuse(self, problem: str) -> None:
        self.problems.append(problem)

    def applied_to(self, policy: BackupPolicy) -> BackupPolicy:
        """A new policy when every value is valid; otherwise every problem at once."""
        if self.problems:
            raise _refusal(self.problems)
        own = _minute(policy.cron)
        if own is not None:  # H keeps the minute the cluster has (BackupPolicy resolves the rest)
            for attr in _CRONS:
                if attr in self.values:
                    self.values[attr] = _own_minute(self.values[attr], own)
        return dataclasses.replace(policy, **self.values)


# --- --set ---------------------------------------------------------------------------------

# A comma starts a new pair only when what follows looks like "key=": cron lists such as
# "0 18 * * 1,3,5" keep their commas.
_PAIR_START = re.compile(r"\s*[A-Za-z][A-Za-z0-9_.]*\s*=", re.ASCII)


def _split_pairs(setting: str) -> list[str]:
    pairs: list[str] = []
    for segment in setting.strip().strip(",").split(","):
        if pairs and not _PAIR_START.match(segment):
            pairs[-1] += "," + segment
        else:
            pairs.append(segment)
    return pairs


def apply_settings(policy: BackupPolicy, settings: list[str]) -> BackupPolicy:
    """Apply kbcli-style ``key=value`` settings (each may be ``a=b,c=d``); all or nothing."""
    if isinstance(settings, str):
        settings = [settings]
    changes = _Changes()
    for setting in settings:
        if not isinstance(setting, str):
            changes.refuse(f"{setting!r} is not text: expected key=value, {_SET_EXAMPLE}")
            continue
        for pair in _split_pairs(setting):
            key, eq, value = pair.partition("=")
            key = key.strip()
            if not eq or not key:
                changes.refuse(f"{pair.strip()!r} is not key=value: {_SET_EXAMPLE}")
            elif key.lower() not in _KEYS_BY_LOWER:
                changes.refuse(_unknown_key(key))
            else:
                changes.set(_KEYS_BY_LOWER[key.lower()], value.strip())
    return changes.applied_to(policy)


# --- YAML for $EDITOR ------------------------------------------------------------------------

_YAML_HEADER = """\
# Edit the backup policy below and save.  metadata is read-only.
# Keys under spec are those of --set, e.g. spec.schedule.logfile.enable is schedule.logfile.enable.
"""
# Keys a pasted kbcli object may carry at the top; read-only here, so they are ignored.
_IGNORED_TOP = {"metadata", "apiVersion", "kind", "status"}


def to_yaml(policy: BackupPolicy) -> str:
    """The policy in kbcli's shape, with a read-only ``metadata`` block, for editing."""
    document = {
        "metadata": {"name": policy.name, "cluster": policy.cluster},
        "spec": {
            "schedule": {
                "datafile": {
                    "enable": policy.datafile_enabled,
                    "cronExpression": policy.cron,
                    "timezone": policy.timezone,
                    "compression": policy.compression,
                },
                "incremental": {
                    "enable": policy.incremental_enabled,
                    "cronExpression": policy.incremental_cron,
                },
                "logfile": {
                    "enable": policy.logfile_enabled,
                    "method": policy.logfile_method,
                    "synchronous": policy.logfile_synchronous,
                },
                "drill": {"enable": policy.drill_enabled, "cronExpression": policy.drill_cron},
            },
            "retention": {"ttl": policy.ttl},
            "backupRepo": _text(policy.repository),
            "heartbeat": {"enable": policy.heartbeat_enabled},
            "rpo": {"max": policy.rpo_max},
            "stream": {"maxRetained": policy.stream_max_retained},
        },
    }
    return _YAML_HEADER + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def _flatten(node: Mapping[Any, Any], prefix: str, changes: _Changes) -> None:
    for raw_key, value in node.items():
        key = f"{prefix}{raw_key}"
        # Known keys are at most three levels deep; going no deeper bounds the recursion.
        if isinstance(value, Mapping) and key.count(".") < 2:
            _flatten(value, f"{key}.", changes)
        elif key.lower() in _KEYS_BY_LOWER:
            changes.set(_KEYS_BY_LOWER[key.lower()], value)
        elif any(known.startswith(f"{key.lower()}.") for known in _KEYS_BY_LOWER):
            changes.refuse(f"spec.{key} is {value!r}: expected a mapping, as to_yaml shows it")
        else:
            changes.refuse(_unknown_key(f"spec.{key}", "key"))


def from_yaml(text: str, base: BackupPolicy) -> BackupPolicy:
    """Read the edited YAML onto ``base``; keys left out keep ``base``'s values."""
    if not isinstance(text, str):
        raise InvalidInput(f"{text!r} is not text: expected the policy YAML from to_yaml")
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InvalidInput(
            f"the backup policy is not valid YAML{where}: {problem}",
            hint="keep the layout shown (two-space indents, spec.retention.ttl: 7d) and quote "
            'values that start with *, e.g. cronExpression: "*/30 * * * *"',
        ) from None
    except Exception as exc:  # PyYAML can fail outside YAMLError (e.g. RecursionError)
        raise InvalidInput(f"the backup policy could not be read as YAML: {exc}") from None
    expected = "expected a mapping with a spec: block, as produced by the editor"
    if document is None:
        raise InvalidInput(f"the backup policy is empty: {expected}")
    if not isinstance(document, Mapping):
        raise InvalidInput(f"the backup policy is {type(document).__name__}, {expected}")
    changes = _Changes()
    for key in document:
        if key != "spec" and key not in _IGNORED_TOP:
            changes.refuse(
                f"unknown top-level key {key!r}: settings belong under spec: (check the indent)"
            )
    spec = document.get("spec", {})
    if isinstance(spec, Mapping):
        _flatten(spec, "", changes)
    elif spec is not None:
        changes.refuse(f"spec is {type(spec).__name__}: {expected}")
    return changes.applied_to(base)


# --- JSON storage ----------------------------------------------------------------------------

_FIELDS = tuple(field.name for field in dataclasses.fields(BackupPolicy) if field.name != "_")


def to_dict(policy: BackupPolicy) -> dict[str, Any]:
    """The policy as a JSON-ready dict of its fields."""
    data = {name: getattr(policy, name) for name in _FIELDS}
    data["repository"] = _text(policy.repository)
    return data


def _text(url: RepositoryUrl | None) -> str:
    """A repository as policy.json and the YAML have always written it: "" for the default."""
    return "" if url is None else str(url)


def from_dict(data: Mapping[str, Any]) -> BackupPolicy:
    """The inverse of ``to_dict``; missing optional fields take their defaults."""
    if not isinstance(data, Mapping):
        raise InvalidInput(f"stored backup policy is {type(data).__name__}: expected a mapping")
    unknown = sorted(str(key) for key in data if key not in _FIELDS)
    missing = [key for key in ("cluster", "create_time") if key not in data]
    if unknown or missing:
        what = [f"unknown fields {', '.join(unknown)}"] if unknown else []
        what += [f"no {', '.join(missing)}"] if missing else []
        raise InvalidInput(
            f"stored backup policy has {' and '.join(what)}: expected the fields "
            f"{', '.join(_FIELDS)}"
        )
    for name in (
        "datafile_enabled",
        "incremental_enabled",
        "logfile_enabled",
        "drill_enabled",
        "heartbeat_enabled",
        "logfile_synchronous",
    ):
        if name in data and not isinstance(data[name], bool):
            raise InvalidInput(
                f"stored backup policy field {name} is {data[name]!r}: expected a boolean"
            )
    return BackupPolicy(**{name: data[name] for name in _FIELDS if name in data})


# --- schedule --------------------------------------------------------------------------------


#: minutes past the hour a new cluster's schedules can start at
MINUTES = 60


def placed(policy: BackupPolicy, taken: Iterable[str]) -> BackupPolicy:
    """POLICY with its full backups moved to a minute of their own, the minute past the hour
    that the fewest of TAKEN (other clusters' full-backup schedules) start at, the first from a
    point that the cluster's name decides; its incremental and drill schedules move by as many
    minutes (the defaults all start at minute 0: they stay together).

    Every cluster on the default policy would otherwise back up, and drill, at the same minute:
    fifty runs at once where a host runs a few at a time, each starting late (issue 24's
    bench: p99 249 s).  For a new cluster's policy (created, registered or restored); a
    schedule whose minute field is not one number (``*/15``) stays as it is."""
    used = Counter(m for m in map(_minute, taken) if m is not None)
    first = zlib.crc32(policy.cluster.encode()) % MINUTES
    # min keeps the first of equals: the search goes round the hour from the name's minute
    minute = min(((first + k) % MINUTES for k in range(MINUTES)), key=lambda m: used[m])
    shift = minute - (_minute(policy.cron) or 0)
    moved = {attr: _moved(getattr(policy, attr), shift) for attr in _CRONS}
    return dataclasses.replace(policy, **moved)


#: the policy's schedules (its full backups' first)
_CRONS = ("cron", "incremental_cron", "drill_cron")


def _own_minute(cron: str, own: int) -> str:
    """CRON with OWN as its minute where it says H (``OWN_MINUTE``)."""
    minute, *rest = cron.split()
    return " ".join([str(own), *rest]) if minute == OWN_MINUTE else cron


def _minute(cron: str) -> int | None:
    field = cron.split()[0]
    return int(field) if field.isdigit() else None


def _moved(cron: str, shift: int) -> str:
    """CRON SHIFT minutes later within its hour, when its minute is one number."""
    minute = _minute(cron)
    if minute is None:
        return cron
    return " ".join([str((minute + shift) % MINUTES), *cron.split()[1:]])


def next_run(policy: BackupPolicy, after: datetime) -> datetime | None:
    """The first scheduled full backup strictly after ``after`` (UTC), or None when disabled."""
    if not policy.datafile_enabled:
        return None
    if not isinstance(after, datetime) or after.utcoffset() is None:
        raise InvalidInput(f"cannot compute the next run after {after!r}: expected an aware time")
    try:
        # croniter reads the expression in the zone of its start time: the policy's zone.
        start = after.astimezone(pendulum.timezone(policy.timezone))
        nxt = croniter(policy.cron, start).get_next(datetime)
        return nxt.astimezone(UTC)
    except Exception as exc:  # croniter raises many types; none of them is ours to pass on
        raise InvalidInput(f"no run of {policy.cron!r} after {after.isoformat()}: {exc}") from None
