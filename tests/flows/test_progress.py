"""tasks/_common.ByteProgress: a progress artifact fed by the thread that moves the bytes, whose
updates (API calls a busy server can hold for seconds) never hold that thread."""

from __future__ import annotations

import threading
import uuid

import pytest

from tests.flows import api


def test_a_slow_progress_update_never_holds_the_thread_that_moves_the_bytes(
    api_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import prefect.artifacts
    from prefect import flow

    from tasks._common import ByteProgress

    real = prefect.artifacts.update_progress_artifact
    release = threading.Event()
    callers: list[threading.Thread] = []

    def slow(artifact_id, progress, *args, **kwargs):  # type: ignore[no-untyped-def]
        callers.append(threading.current_thread())
        release.wait(10)  # a server answering 503, retried: the mover must not wait for it
        return real(artifact_id, progress, *args, **kwargs)

    monkeypatch.setattr(prefect.artifacts, "update_progress_artifact", slow)
    key = f"progress-test-{uuid.uuid4().hex[:8]}"
    moving = threading.current_thread()

    @flow
    def move_bytes() -> None:  # an artifact belongs to a run
        bar = ByteProgress(key, "bytes moved", interval=0)
        for done in (1, 50, 99):
            bar(done, 100)  # the mover goes on while an update waits
        assert moving not in callers, "an update was made by the thread moving the bytes"
        release.set()
        bar.finish()

    move_bytes()
    assert callers and callers[-1] is moving  # the last update (100 %) is the caller's own
    (artifact,) = api.artifacts(key)
    assert artifact.data == 100.0
