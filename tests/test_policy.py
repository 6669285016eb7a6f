"""pgpitr.policy: --set, the editor YAML, JSON storage and the schedule."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone

import pendulum
import pytest
import yaml
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from pgpitr.errors import InvalidInput
from pgpitr.policy import (
    SETTING_KEYS,
    BackupPolicy,
    apply_settings,
    from_dict,
    from_yaml,
    next_run,
    placed,
    to_dict,
    to_yaml,
)
from pgpitr.timeparse import format_ttl

FAST = settings(max_examples=200, deadline=None)
CREATED = "2023-04-17T11:56:40+00:00"
BASE = BackupPolicy("my-pg", create_time=CREATED)


def refusal(call, *args) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput) as info:
        call(*args)
    return str(info.value)


# --- the model -------------------------------------------------------------------------------


def test_defaults_and_name() -> None:
    assert BASE.name == "my-pg-postgresql-backup-policy"
    assert (BASE.datafile_enabled, BASE.cron, BASE.timezone) == (True, "0 18 * * 0", "UTC")
    assert (BASE.logfile_enabled, BASE.ttl, BASE.repository) == (False, "7d", None)
    assert BASE.create_time == CREATED
    with pytest.raises(dataclasses.FrozenInstanceError):
        BASE.ttl = "1d"  # type: ignore[misc]


def test_construction_validates_and_canonicalises() -> None:
    policy = BackupPolicy(
        "my-pg", cron=" 0  18 * * 0 ", timezone="asia/shanghai", ttl=" 1d ", create_time=CREATED
    )
    assert (policy.cron, policy.timezone, policy.ttl) == ("0 18 * * 0", "Asia/Shanghai", "1d")
    message = refusal(lambda: BackupPolicy("my-pg", cron="nope", ttl="7", create_time=CREATED))
    assert "schedule.datafile.cronExpression" in message and "retention.ttl" in message
    assert "cluster name" in refusal(lambda: BackupPolicy("  ", create_time=CREATED))
    assert "ISO time" in refusal(lambda: BackupPolicy("my-pg", create_time=None))  # type: ignore[arg-type]


# --- apply_settings: accepted ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings_", "changes"),
    [
        (["schedule.logfile.enable=true"], {"logfile_enabled": True}),
        (["schedule.datafile.enable=false"], {"datafile_enabled": False}),
        (["schedule.datafile.cronExpression=0 3 * * *"], {"cron": "0 3 * * *"}),
        (["schedule.datafile.cronExpression=*/30 * * * *"], {"cron": "*/30 * * * *"}),
        (["schedule.datafile.timezone=Asia/Shanghai"], {"timezone": "Asia/Shanghai"}),
        (["schedule.datafile.timezone=america/new_york"], {"timezone": "America/New_York"}),
        (["retention.ttl=30d"], {"ttl": "30d"}),
        (["retention.ttl=1d12h"], {"ttl": "1d12h"}),
        (["backupRepo=s3://demo/pg"], {"repository": "s3://demo/pg"}),
        (["backupRepo=file:///var/lib/pgpitr/repo"], {"repository": "file:///var/lib/pgpitr/repo"}),
        (["backupRepo="], {"repository": ""}),
        # one grammar with the repository itself: stored normalised
        (["backupRepo=file://localhost/srv/repo/"], {"repository": "file:///srv/repo"}),
        (
            ["backupRepo=s3://demo/pg/?region=r&endpoint=http://h:9000"],
            {"repository": "s3://demo/pg?endpoint=http://h:9000&region=r"},
        ),
        # kbcli's comma-separated pairs, several --set flags, spaces and key case
        (
            ["schedule.logfile.enable=true,retention.ttl=3d", "backupRepo=s3://b"],
            {"logfile_enabled": True, "ttl": "3d", "repository": "s3://b"},
        ),
        ([" Schedule.Logfile.Enable = YES "], {"logfile_enabled": True}),
        # commas inside a cron list stay in the value
        (
            ["schedule.datafile.cronExpression=0 18 * * 1,3,5,retention.ttl=1d"],
            {"cron": "0 18 * * 1,3,5", "ttl": "1d"},
        ),
        (["retention.ttl=1d,retention.ttl=2d"], {"ttl": "2d"}),
        (["backup.source=Standby"], {"backup_source": "standby"}),
        (["backup.source=primary"], {"backup_source": "primary"}),
        (["schedule.logfile.enable=true,"], {"logfile_enabled": True}),
        ([], {}),
    ],
)
def test_apply_settings(settings_: list[str], changes: dict[str, object]) -> None:
    assert apply_settings(BASE, settings_) == dataclasses.replace(BASE, **changes)


@pytest.mark.parametrize(
    ("word", "value"),
    [
        *[(w, True) for w in ("true", "TRUE", "yes", "Yes", "on", "ON", "1")],
        *[(w, False) for w in ("false", "False", "no", "NO", "off", "Off", "0")],
    ],
)
def test_boolean_words(word: str, value: bool) -> None:
    on = apply_settings(BASE, [f"schedule.logfile.enable={word}"])
    assert on.logfile_enabled is value


def test_apply_settings_leaves_the_input_alone() -> None:
    before = to_dict(BASE)
    apply_settings(BASE, ["retention.ttl=1d"])
    with pytest.raises(InvalidInput):
        apply_settings(BASE, ["retention.ttl=1d", "schedule.logfile.enable=maybe"])
    assert to_dict(BASE) == before


# --- apply_settings: refused -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("schedule.logfile.enable=maybe", "expected true or false"),
        ("schedule.logfile.enable=", "expected true or false"),
        ("schedule.datafile.enable=2", "expected true or false"),
        (
            "schedule.datafile.cronExpression=0 18 * *",
            'expected a 5-field cron expression like "0 18',
        ),
        ("schedule.datafile.cronExpression=0 0 18 * * 0", "has 6 fields"),
        ("schedule.datafile.cronExpression=@daily", "has 1 fields"),
        ("schedule.datafile.cronExpression=61 18 * * 0", "not a cron schedule that runs"),
        ("schedule.datafile.cronExpression=0 0 30 2 *", "not a cron schedule that runs"),
        ("schedule.datafile.cronExpression=*/0 * * * *", "not a cron schedule that runs"),
        ("schedule.datafile.timezone=Mars/Olympus", "expected an IANA name like UTC or Asia/"),
        ("schedule.datafile.timezone=+08:00", "expected an IANA name"),
        ("schedule.datafile.timezone=", "expected an IANA name"),
        ("retention.ttl=2w", "a TTL like 7d, 12h or 30m"),
        ("retention.ttl=0d", "a TTL like 7d, 12h or 30m"),
        ("retention.ttl=", "a TTL like 7d, 12h or 30m"),
        ("backupRepo=http://example.com", "expected file:///var/lib/pgpitr/repo or s3://bucket"),
        ("backupRepo=/var/lib/repo", "expected file:///"),
        ("backupRepo=s3://", "s3://bucket/prefix"),
        ("backupRepo=s3://key:secret@b/x", "must not carry credentials"),
        ("backupRepo=s3://b/x?token=1", "unknown S3 repository option(s) token"),
        ("backupRepo=file://host/x", "a file repository is local"),
        ("backupRepo=ftp://x", "(empty for the default repository)"),
        ("backup.source=replica", "expected primary, standby or prefer-standby"),
    ],
)
def test_apply_settings_refuses_values(setting: str, expected: str) -> None:
    message = refusal(apply_settings, BASE, [setting])
    assert expected in message
    assert setting.partition("=")[0] in message


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("retention.tll=7d", "(did you mean retention.ttl?)"),
        ("schedule.enable=true", "unknown setting 'schedule.enable'"),
        ("foo=bar", "unknown setting 'foo'"),
        ("=true", "is not key=value"),
        ("schedule.logfile.enable", "is not key=value"),
        ("", "is not key=value"),
    ],
)
def test_apply_settings_refuses_keys(setting: str, expected: str) -> None:
    message = refusal(apply_settings, BASE, [setting])
    assert expected in message
    if "unknown" in expected or "did you mean" in expected:
        assert "expected one of " + ", ".join(SETTING_KEYS) in message
    else:
        assert "--set schedule.logfile.enable=true" in message


def test_apply_settings_is_all_or_nothing_and_lists_every_problem() -> None:
    message = refusal(
        apply_settings,
        BASE,
        ["retention.ttl=30d,schedule.logfile.enable=maybe", "nope=1", "backupRepo=ftp://x"],
    )
    lines = message.splitlines()
    assert len(lines) == 4
    assert lines[1].startswith("  - schedule.logfile.enable: 'maybe'")
    assert lines[2].startswith("  - unknown setting 'nope'")
    assert lines[3].startswith("  - backupRepo: 'ftp://x'")


def test_compression_is_zstd_with_a_level_or_none() -> None:
    for given_value, canonical in [
        ("none", "none"),
        ("NONE", "none"),
        ("zstd", "zstd:3"),
        ("zstd:1", "zstd:1"),
        (" ZSTD:19 ", "zstd:19"),
    ]:
        policy = apply_settings(BASE, [f"schedule.datafile.compression={given_value}"])
        assert policy.compression == canonical
    for bad in ["gzip", "zstd:0", "zstd:20", "zstd:", "zstd:3x", "lz4:1"]:
        message = refusal(apply_settings, BASE, [f"schedule.datafile.compression={bad}"])
        assert "schedule.datafile.compression" in message and "zstd:N" in message


KEYS = st.sampled_from(SETTING_KEYS).flatmap(
    lambda key: st.sampled_from([key, key.upper(), f" {key} "])
)
pairs = st.builds("{}={}".format, KEYS, st.text(max_size=20))
settings_lists = st.lists(
    st.one_of(st.text(), pairs, st.lists(pairs, max_size=3).map(",".join)), max_size=4
)


@FAST
@given(settings_lists)
def test_apply_settings_never_raises_anything_else(values: list[str]) -> None:
    try:
        policy = apply_settings(BASE, values)
    except InvalidInput:
        return
    assert isinstance(policy, BackupPolicy)
    assert from_dict(to_dict(policy)) == policy


# --- YAML ------------------------------------------------------------------------------------


def test_to_yaml_shape() -> None:
    policy = apply_settings(BASE, ["backupRepo=s3://demo/pg", "schedule.logfile.enable=on"])
    text = to_yaml(policy)
    assert text.startswith("#")
    assert yaml.safe_load(text) == {
        "metadata": {"name": "my-pg-postgresql-backup-policy", "cluster": "my-pg"},
        "spec": {
            "schedule": {
                "datafile": {
                    "enable": True,
                    "cronExpression": "0 18 * * 0",
                    "timezone": "UTC",
                    "compression": "zstd:3",
                },
                "incremental": {"enable": False, "cronExpression": "0 18 * * 1-6"},
                "logfile": {"enable": True, "method": "archive", "synchronous": False},
                "drill": {"enable": True, "cronExpression": "0 3 * * *"},
            },
            "retention": {"ttl": "7d"},
            "backupRepo": "s3://demo/pg",
            "heartbeat": {"enable": True},
            "rpo": {"max": "5m"},
            "stream": {"maxRetained": "1GB"},
        },
    }


def test_from_yaml_edits_and_ignores_metadata() -> None:
    text = (
        to_yaml(BASE)
        .replace("ttl: 7d", "ttl: 30d")
        .replace("enable: false", "enable: yes")
        .replace("cluster: my-pg", "cluster: someone-else")
        .replace("name: my-pg-postgresql-backup-policy", "name: renamed")
    )
    edited = from_yaml(text, BASE)
    assert edited == dataclasses.replace(
        BASE, ttl="30d", logfile_enabled=True, incremental_enabled=True
    )


def test_from_yaml_keeps_what_is_left_out() -> None:
    policy = dataclasses.replace(BASE, ttl="3d", logfile_enabled=True)
    assert from_yaml("spec:\n  retention:\n    ttl: 12h\n", policy) == dataclasses.replace(
        policy, ttl="12h"
    )
    assert from_yaml("metadata: {name: x}\nkind: BackupPolicy\n", policy) == policy
    assert from_yaml(
        'spec:\n  schedule: {datafile: {cronExpression: "*/5 * * * *"}}\n', BASE
    ).cron == ("*/5 * * * *")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("spec:\n  retention: {ttl: 7d\n", "not valid YAML at line 3"),
        ("spec:\n  retention:\n    ttl: 7d\n   backupRepo: x\n", "not valid YAML at line 4"),
        ("spec:\n\tretention: 1\n", "not valid YAML at line 2"),
        ("spec:\n  schedule:\n    datafile:\n      cronExpression: */5 * * * *\n", "at line 4"),
        ("", "the backup policy is empty"),
        ("# only comments\n", "the backup policy is empty"),
        ("- spec\n", "the backup policy is list, expected a mapping with a spec: block"),
        ("spec: 5\n", "spec is int"),
        ("retention:\n  ttl: 7d\n", "unknown top-level key 'retention'"),
        ("spec:\n  retention:\n    tll: 7d\n", "unknown key 'spec.retention.tll' (did you mean"),
        ("spec:\n  schedule: on\n", "spec.schedule is True: expected a mapping"),
        ("spec:\n  retention:\n    ttl: 7\n", "a TTL like 7d, 12h or 30m"),
        ("spec:\n  schedule:\n    logfile:\n      enable: maybe\n", "expected true or false"),
        ("spec:\n  schedule:\n    datafile:\n      timezone: Mars/Base\n", "IANA name"),
        ("spec:\n  backupRepo: [a]\n", "not a repository URL"),
    ],
)
def test_from_yaml_refuses(text: str, expected: str) -> None:
    assert expected in refusal(from_yaml, text, BASE)


def test_from_yaml_syntax_error_has_a_hint() -> None:
    with pytest.raises(InvalidInput) as info:
        from_yaml("spec:\n  retention: {ttl: 7d\n", BASE)
    assert info.value.hint and "spec.retention.ttl: 7d" in info.value.hint


CRONS = ["0 18 * * 0", "*/15 * * * *", "0 3 * * 1-5", "30 2 * * *", "0 0 1 * *", "5 4 L * *"]
ZONES = ["UTC", "Asia/Shanghai", "America/New_York", "Europe/London", "Australia/Lord_Howe"]
policies = st.builds(
    BackupPolicy,
    st.text(min_size=1, max_size=20).filter(str.strip),
    datafile_enabled=st.booleans(),
    cron=st.sampled_from(CRONS),
    timezone=st.sampled_from(ZONES),
    logfile_enabled=st.booleans(),
    incremental_enabled=st.booleans(),
    incremental_cron=st.sampled_from(CRONS),
    ttl=st.integers(1, 3650 * 86400).map(lambda s: format_ttl(timedelta(seconds=s))),
    repository=st.sampled_from(["", "s3://demo/pg", "file:///srv/pgpitr%20repo", "s3://b"]),
    compression=st.sampled_from(["none", "zstd:1", "zstd:3", "zstd:19"]),
    create_time=st.just(CREATED),
)


@FAST
@given(policies)
def test_yaml_round_trip(policy: BackupPolicy) -> None:
    base = BackupPolicy(policy.cluster, create_time=policy.create_time)
    assert from_yaml(to_yaml(policy), base) == policy


@FAST
@given(st.text())
def test_from_yaml_never_raises_anything_else(text: str) -> None:
    try:
        from_yaml(text, BASE)
    except InvalidInput:
        pass


# --- JSON storage ----------------------------------------------------------------------------


@FAST
@given(policies)
def test_dict_round_trip_through_json(policy: BackupPolicy) -> None:
    data = json.loads(json.dumps(to_dict(policy)))
    assert from_dict(data) == policy


def test_to_dict_fields() -> None:
    assert to_dict(BASE) == {
        "cluster": "my-pg",
        "datafile_enabled": True,
        "cron": "0 18 * * 0",
        "timezone": "UTC",
        "logfile_enabled": False,
        "ttl": "7d",
        "repository": "",
        "compression": "zstd:3",
        "incremental_enabled": False,
        "incremental_cron": "0 18 * * 1-6",
        "drill_enabled": True,
        "drill_cron": "0 3 * * *",
        "heartbeat_enabled": True,
        "rpo_max": "5m",
        "logfile_method": "archive",
        "logfile_synchronous": False,
        "stream_max_retained": "1GB",
        "backup_source": "prefer-standby",
        "create_time": CREATED,
    }


def test_from_dict_defaults_and_refusals() -> None:
    assert from_dict({"cluster": "my-pg", "create_time": CREATED}) == BASE
    assert "no create_time" in refusal(from_dict, {"cluster": "my-pg"})
    assert "unknown fields extra" in refusal(from_dict, {**to_dict(BASE), "extra": 1})
    assert "expected a boolean" in refusal(from_dict, {**to_dict(BASE), "logfile_enabled": "yes"})
    assert "expected a mapping" in refusal(from_dict, ["my-pg"])
    assert "a TTL like 7d" in refusal(from_dict, {**to_dict(BASE), "ttl": "forever"})


# --- next_run --------------------------------------------------------------------------------


def test_next_run_default_is_sunday_18_utc() -> None:
    monday = datetime(2023, 4, 17, 11, 56, 40, tzinfo=UTC)
    assert next_run(BASE, monday) == datetime(2023, 4, 23, 18, tzinfo=UTC)
    # strictly after: a run exactly at `after` is not the next one
    at_run = datetime(2023, 4, 23, 18, tzinfo=UTC)
    assert next_run(BASE, at_run) == datetime(2023, 4, 30, 18, tzinfo=UTC)
    in_shanghai = at_run.astimezone(pendulum.timezone("Asia/Shanghai"))
    assert next_run(BASE, in_shanghai) == datetime(2023, 4, 30, 18, tzinfo=UTC)


def test_next_run_in_policy_zone() -> None:
    shanghai = dataclasses.replace(BASE, timezone="Asia/Shanghai")
    got = next_run(shanghai, datetime(2023, 4, 17, tzinfo=UTC))
    assert got == datetime(2023, 4, 23, 10, tzinfo=UTC)
    assert got is not None and got.tzinfo is UTC
    # New York's 18:00 is 23:00 UTC in winter and 22:00 UTC after the March change
    new_york = dataclasses.replace(BASE, timezone="America/New_York")
    assert next_run(new_york, datetime(2023, 3, 1, tzinfo=UTC)) == datetime(
        2023, 3, 5, 23, tzinfo=UTC
    )
    assert next_run(new_york, datetime(2023, 3, 6, tzinfo=UTC)) == datetime(
        2023, 3, 12, 22, tzinfo=UTC
    )


def test_next_run_disabled_and_refusals() -> None:
    assert next_run(dataclasses.replace(BASE, datafile_enabled=False), datetime.now(UTC)) is None
    assert "expected an aware time" in refusal(next_run, BASE, datetime(2023, 4, 17))


@FAST
@given(
    policies.filter(lambda p: p.datafile_enabled),
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1)),
    st.integers(-14 * 60, 14 * 60),
)
def test_next_run_is_after_and_on_schedule(
    policy: BackupPolicy, wall: datetime, offset: int
) -> None:
    after = wall.replace(tzinfo=timezone(timedelta(minutes=offset)))
    got = next_run(policy, after)
    assert got is not None and got.tzinfo is UTC
    assert after < got <= after + timedelta(days=32)
    if policy.timezone in ("UTC", "Asia/Shanghai"):  # no DST gaps to shift a run
        local = got.astimezone(pendulum.timezone(policy.timezone)).replace(tzinfo=None)
        assert croniter.match(policy.cron, local)


# --- drills, heartbeat, RPO ------------------------------------------------------------------


def test_drill_heartbeat_and_rpo_keys_are_validated_like_the_others() -> None:
    policy = apply_settings(
        BASE,
        [
            "schedule.drill.enable=off,schedule.drill.cronExpression= 0  4 * * 1,3",
            "heartbeat.enable=no,rpo.max=90s",
        ],
    )
    assert (policy.drill_enabled, policy.drill_cron) == (False, "0 4 * * 1,3")
    assert (policy.heartbeat_enabled, policy.rpo_max) == (False, "90s")
    assert from_yaml(to_yaml(policy), BASE) == policy
    assert from_dict(to_dict(policy)) == policy
    message = refusal(
        apply_settings, BASE, ["schedule.drill.cronExpression=@daily,rpo.max=5w,heartbeat.enable=2"]
    )
    assert "schedule.drill.cronExpression: '@daily' has 1 fields" in message
    assert "rpo.max: cannot read the TTL '5w'" in message
    assert "heartbeat.enable: '2' is not a boolean" in message


def test_created_defaults_drill_daily_with_heartbeat_and_a_5m_rpo() -> None:
    assert (BASE.drill_enabled, BASE.drill_cron, BASE.heartbeat_enabled, BASE.rpo_max) == (
        True,
        "0 3 * * *",
        True,
        "5m",
    )
    # a policy stored before these keys existed reads with the defaults
    stored = {k: v for k, v in to_dict(BASE).items() if not k.startswith(("drill", "heart", "rpo"))}
    assert from_dict(stored) == BASE
    with pytest.raises(InvalidInput, match="heartbeat_enabled is 'yes': expected a boolean"):
        from_dict({**to_dict(BASE), "heartbeat_enabled": "yes"})


def test_incremental_schedule_keys_are_validated_like_the_others() -> None:
    daily = apply_settings(
        BASE,
        ["schedule.incremental.enable=true,schedule.incremental.cronExpression=0 1 * * 1-6"],
    )
    assert (daily.incremental_enabled, daily.incremental_cron) == (True, "0 1 * * 1-6")
    assert (BASE.incremental_enabled, daily.cron) == (False, BASE.cron)  # the full's stays
    message = refusal(apply_settings, BASE, ["schedule.incremental.cronExpression=daily"])
    assert "schedule.incremental.cronExpression" in message and "5-field" in message
    assert from_yaml(to_yaml(daily), BASE) == daily


def test_a_new_clusters_schedules_go_to_the_least_taken_minute() -> None:
    alone = placed(BASE, [])
    minute = alone.cron.split()[0]
    # each default moved to the same minute, its hours and days kept
    assert (alone.cron, alone.incremental_cron, alone.drill_cron) == (
        f"{minute} 18 * * 0",
        f"{minute} 18 * * 1-6",
        f"{minute} 3 * * *",
    )
    assert placed(BASE, []) == alone  # the name decides where the search starts: stable
    taken_once = [f"{m} 18 * * 0" for m in range(60)]
    # every minute taken once, the name's one twice: the next one round the hour
    nxt = placed(BASE, [*taken_once, alone.cron]).cron.split()[0]
    assert nxt == str((int(minute) + 1) % 60)
    # a busy hour: the minute the fewest start at
    busy = [f"{m} 1 * * *" for m in range(60) for _ in range(2) if m != 17] + ["17 2 * * *"]
    assert placed(BASE, busy).cron == "17 18 * * 0"
    # schedules without one minute count for none
    assert placed(BASE, ["*/5 * * * *", "0,30 * * * *"]) == alone


def test_fifty_new_clusters_get_fifty_minutes() -> None:
    taken: list[str] = []
    for n in range(50):
        taken.append(placed(BackupPolicy(f"pg{n:02d}", create_time=CREATED), taken).cron)
    assert len({cron.split()[0] for cron in taken}) == 50


def test_a_minute_that_is_not_one_number_stays() -> None:
    written = dataclasses.replace(BASE, cron="*/15 18 * * 0", drill_cron="0,30 3 * * *")
    moved = placed(written, [])
    assert (moved.cron, moved.drill_cron) == ("*/15 18 * * 0", "0,30 3 * * *")
    assert moved.incremental_cron != written.incremental_cron  # a plain minute: moved


def test_schedules_written_apart_move_together() -> None:
    # e.g. a restored cluster's copy of its source's policy: the full at :50, the drill at :20
    written = dataclasses.replace(BASE, cron="50 1 * * *", drill_cron="20 4 * * *")
    moved = placed(written, ["50 1 * * *"])  # the source's own minute is taken
    full, drill = int(moved.cron.split()[0]), int(moved.drill_cron.split()[0])
    assert full != 50 and (drill - full) % 60 == 30, moved
    assert (moved.cron.split()[1:], moved.drill_cron.split()[1:]) == (
        ["1", "*", "*", "*"],
        ["4", "*", "*", "*"],
    )


def test_h_as_the_minute_is_the_clusters_own() -> None:
    mine = placed(BASE, [])
    minute = mine.cron.split()[0]
    daily = apply_settings(
        mine,
        [
            "schedule.datafile.cronExpression=H 1 * * *,"
            "schedule.incremental.cronExpression=h 1 * * 1-6"
        ],
    )
    assert (daily.cron, daily.incremental_cron) == (f"{minute} 1 * * *", f"{minute} 1 * * 1-6")
    assert daily.drill_cron == mine.drill_cron
    edited = from_yaml(
        to_yaml(mine).replace(f"cronExpression: {minute} 3", "cronExpression: H 4"), mine
    )
    assert edited.drill_cron == f"{minute} 4 * * *"
    # made without a minute to keep: the same one for each, one the name decides
    made = BackupPolicy("made", cron="H 2 * * *", drill_cron="H 5 * * *", create_time=CREATED)
    own = made.cron.split()[0]
    assert own.isdigit() and made.drill_cron == f"{own} 5 * * *"
    # a schedule given a minute keeps it
    assert BackupPolicy("made", cron="H 2 * * *", create_time=CREATED).drill_cron == "0 3 * * *"
    assert "H/15 * * * *" in refusal(
        apply_settings, BASE, ["schedule.datafile.cronExpression=H/15 * * * *"]
    )
