"""pgpitr/targets.py, the parts a run form leans on: a kind said outright is checked against
the field that is filled (chosen but empty is refused, never read as latest), a kind not said is
read from the fields as before, and the JSON schema gives the form a text field for the time
(every format the CLI takes) and a dropdown for the kind.  The other checks of a target, and
restores to each kind, are in tests/test_restore.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pgpitr.errors import InvalidInput
from pgpitr.targets import KINDS, RestoreTarget


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "time"}, "kind time was chosen but no time was given"),
        # what the run form sends when the time field was left empty
        (
            {"kind": "time", "time": None, "lsn": None, "immediate": False, "inclusive": True},
            "kind time was chosen but no time was given",
        ),
        ({"kind": "time", "time": "  "}, "kind time was chosen but no time was given"),
        ({"kind": "time", "time": "latest"}, "kind time was chosen but no time was given"),
        ({"kind": "lsn", "lsn": ""}, "kind lsn was chosen but no LSN was given"),
        ({"kind": "xid"}, "kind xid was chosen but no transaction id was given"),
        ({"kind": "name"}, "kind name was chosen but no restore point name was given"),
        ({"kind": "time", "lsn": "0/1"}, "kind time was chosen but the LSN field was filled"),
        ({"kind": "latest", "xid": 745}, "kind latest was chosen but the transaction id field"),
        ({"kind": "immediate", "name": "p"}, "--restore-to-name (name) and"),
        ({"kind": "when"}, "kind: Input should be 'latest', 'time'"),
    ],
)
def test_a_chosen_kind_without_its_field_or_with_another_is_refused(fields, message) -> None:
    with pytest.raises(InvalidInput) as info:
        RestoreTarget.of(**fields)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ({"kind": "time", "time": "Apr 17,2023 19:56:40 UTC+0800"}, "time"),
        ({"kind": " TIME ", "time": "2023-04-17 19:56:40 Asia/Shanghai"}, "time"),
        ({"kind": "lsn", "lsn": "0/3000028", "inclusive": False}, "lsn"),
        ({"kind": "xid", "xid": "745"}, "xid"),
        ({"kind": "name", "name": "before-upgrade"}, "name"),
        # the form always sends the checkbox, unticked: choosing the kind is enough
        ({"kind": "immediate", "immediate": False}, "immediate"),
        ({"kind": "latest"}, "latest"),
        ({"kind": "latest", "time": "latest"}, "latest"),
        ({"kind": "", "time": "2023-04-17T11:56:40Z"}, "time"),
        ({"kind": None, "xid": 745}, "xid"),
        ({}, "latest"),
    ],
)
def test_a_chosen_kind_with_its_field_or_none_chosen_is_read(fields, kind) -> None:
    target = RestoreTarget.of(**fields)
    assert target.kind == kind
    assert target == RestoreTarget.model_validate(target.as_parameter())
    assert target.as_parameter()["kind"] == kind  # the run's parameters say what was meant


def test_a_kind_read_from_its_field_equals_the_same_kind_said_outright() -> None:
    read = RestoreTarget(time=datetime(2023, 4, 17, 11, 56, 40, tzinfo=UTC))
    said = RestoreTarget.of(kind="time", time="2023-04-17T11:56:40Z")
    assert read == said and read.kind == "time"
    # a kind that was read is not dumped (reading the dump infers it again): the flow's
    # default target, the run form's starting value, chooses no kind for the person
    assert "kind" not in RestoreTarget().model_dump(mode="json")
    assert said.model_dump(mode="json")["kind"] == "time"
    assert read.as_parameter() == {"kind": "time", "time": "2023-04-17T11:56:40Z"}
    assert read.as_parameter() == said.as_parameter()


def test_the_schema_gives_the_form_a_text_field_for_the_time_and_a_dropdown_for_the_kind():
    fields = RestoreTarget.model_json_schema()["properties"]
    # a plain string: a text field taking every format the CLI takes, not a date picker (format
    # date-time) nor a pair of tabs (anyOf with null); no default, so the form starts it unset
    assert {k: v for k, v in fields["time"].items() if k not in ("title", "description")} == {
        "type": "string"
    }
    for example in ("RFC 3339", "Apr 17,2023 19:56:40 UTC+0800", "Asia/Shanghai", "latest"):
        assert example in fields["time"]["description"]
    assert fields["kind"]["enum"] == list(KINDS) and fields["kind"]["type"] == "string"
    assert (
        "default" not in fields["kind"] and "never read as latest" in fields["kind"]["description"]
    )
    assert list(fields)[0] == "kind"  # the form's first field
