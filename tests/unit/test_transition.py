"""The transition record (daemon/transition.py): pure, times passed in."""

from __future__ import annotations

from conntrack_tools.daemon.transition import TransitionLog


def test_empty_record_before_any_transition() -> None:
    log = TransitionLog(started=100.0)
    assert log.as_json() == {"count": 0, "ready": 0, "readiness_wait_seconds": None}


def test_commit_belongs_to_the_transition_to_primary() -> None:
    log = TransitionLog(started=100.0)
    log.role(101.0, None, "backup")
    log.commit(5, 0, 0.1)  # a manual -c while backup: not part of a takeover
    assert log.last is not None and log.last.committed is None
    log.role(150.0, "backup", "primary")
    log.commit(110, 2, 0.0125)
    log.commit(7, 0, 0.5)  # a later manual commit does not overwrite the takeover's figures
    d = log.as_json()
    assert d["count"] == 2
    assert (d["at"], d["from"], d["to"], d["to_primary"]) == (150.0, "backup", "primary", 1)
    assert (d["committed"], d["commit_failed"], d["commit_seconds"]) == (110, 2, 0.0125)


def test_direct_injection_has_no_commit() -> None:
    log = TransitionLog(started=0.0)
    log.role(3.0, "backup", "primary")
    d = log.as_json()
    assert d["committed"] is None and d["commit_seconds"] is None and d["commit_failed"] == 0


def test_readiness_wait_is_measured_once() -> None:
    log = TransitionLog(started=10.0)
    log.ready(12.5)
    log.ready(20.0)  # later readiness checks change nothing
    assert log.readiness_wait == 2.5
    assert log.as_json()["ready"] == 1
    assert log.as_json()["readiness_wait_seconds"] == 2.5


def test_numbers_become_metrics_and_names_do_not() -> None:
    from conntrack_tools.daemon.metrics import render

    log = TransitionLog(started=10.0)
    log.role(11.0, None, "primary")
    log.commit(3, 0, 0.25)
    log.ready(11.5)
    text = render({}, {}, 0, 0, sync={"transition": log.as_json()})
    text = text.decode() if isinstance(text, bytes) else text
    assert "conntrackd_sync_transition_committed 3.0" in text
    assert "conntrackd_sync_transition_commit_seconds 0.25" in text
    assert "conntrackd_sync_transition_readiness_wait_seconds 1.5" in text
    assert "conntrackd_sync_transition_to_primary 1.0" in text
    assert "primary\"" not in text  # role names are not label values


def test_a_backup_asking_again_shows_that_wait() -> None:
    log = TransitionLog(started=10.0)
    log.ready(12.5)
    log.waiting(100.0)  # -n on a ready backup: not ready until that bulk is in
    assert log.as_json()["ready"] == 0 and log.readiness_wait is None
    log.ready(101.25)
    assert log.readiness_wait == 1.25
