"""The journey of a spawn: loader reports, and which step is blamed when the child dies."""

from __future__ import annotations

import pytest

from ferryman.spawning.journey import LOADER_STEPS as STEPS
from ferryman.spawning.journey import Journey, StepState

LOADER_STEPS = [name for name, side, _ in STEPS if side == "loader"]
CORE_STEPS = [name for name, side, _ in STEPS if side == "core"]


def test_a_new_journey_has_every_step_not_started() -> None:
    """A journey starts with every step, in order, not started."""
    journey = Journey()
    assert list(journey.steps) == [name for name, _, _ in STEPS]
    assert all(step.state is StepState.NOT_STARTED for step in journey.steps.values())
    assert journey.failed_step() is None


@pytest.mark.parametrize("name", LOADER_STEPS)
def test_loader_reports_move_a_step_along(name: str) -> None:
    """in_progress, then performed, records the state and times of a loader step."""
    journey = Journey()
    assert journey.report(name, "in_progress", 10.0)
    step = journey.steps[name]
    assert (step.state, step.started_at, step.ended_at) == (StepState.IN_PROGRESS, 10.0, None)
    assert step.duration is None
    assert journey.report(name, "performed", 12.5)
    assert (step.state, step.started_at, step.ended_at) == (StepState.PERFORMED, 10.0, 12.5)
    assert step.duration == pytest.approx(2.5)


def test_performed_without_in_progress_takes_no_time() -> None:
    """A step reported performed straight away starts and ends at that moment."""
    journey = Journey()
    assert journey.report("loader_start", "performed", 3.0)
    step = journey.steps["loader_start"]
    assert (step.state, step.duration) == (StepState.PERFORMED, 0.0)


def test_errored_report_marks_the_failed_step() -> None:
    """A step reported errored is the journey's failed step."""
    journey = Journey()
    journey.report("load_app", "in_progress", 1.0)
    assert journey.report("load_app", "errored", 2.0)
    failed = journey.failed_step()
    assert failed is not None and failed.name == "load_app"
    assert failed.state is StepState.ERRORED
    assert failed.duration == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("name", "state"),
    [
        ("bogus", "performed"),
        ("", "in_progress"),
        ("LOAD_APP", "performed"),
        *[(core, "performed") for core in CORE_STEPS],  # the loader cannot report core steps
        ("load_app", "done"),
        ("load_app", "not_started"),
        ("load_app", "None"),
        ("load_app", "PERFORMED"),
    ],
)
def test_unknown_reports_are_refused(name: str, state: str) -> None:
    """Reports of unknown steps, core steps or unknown states are refused and change nothing."""
    journey = Journey()
    assert journey.report(name, state, 1.0) is False
    assert all(step.state is StepState.NOT_STARTED for step in journey.steps.values())


def journey_with(states: dict[str, str]) -> Journey:
    """A journey whose listed steps are in the given states (reported in STEPS order)."""
    journey = Journey()
    for at, name in enumerate(journey.steps):
        state = states.get(name)
        if state in ("in_progress", "performed"):
            journey.begin(name, float(at))
        if state == "performed":
            journey.done(name, float(at) + 0.5)
    return journey


INFERRED = [
    # (states of steps, the step that must have failed)
    ({}, "prepare"),
    ({"prepare": "in_progress"}, "prepare"),
    ({"prepare": "performed"}, "spawn"),
    ({"prepare": "performed", "spawn": "performed"}, "loader_start"),
    ({"prepare": "performed", "spawn": "performed", "loader_start": "performed"}, "load_app"),
    (
        {"prepare": "performed", "spawn": "performed", "loader_start": "performed",
         "load_app": "in_progress"},
        "load_app",
    ),
    (
        {"prepare": "performed", "spawn": "performed", "loader_start": "performed",
         "load_app": "performed", "listen": "in_progress"},
        "listen",
    ),
    (
        {"prepare": "performed", "spawn": "performed", "loader_start": "performed",
         "load_app": "performed"},
        "listen",
    ),
    ({name: "performed" for name, _, _ in STEPS}, "finish"),
]  # fmt: skip


@pytest.mark.parametrize(("states", "blamed"), INFERRED)
def test_infer_failure_picks_in_progress_else_first_not_started(
    states: dict[str, str], blamed: str
) -> None:
    """The step in progress failed; if none is, the first step not started is where it died."""
    journey = journey_with(states)
    step = journey.infer_failure(100.0)
    assert step.name == blamed
    assert step.state is StepState.ERRORED
    assert step.ended_at == 100.0
    assert journey.failed_step() is step


def test_infer_failure_keeps_a_reported_failure() -> None:
    """When a step already errored, it is the answer and no other step changes."""
    journey = journey_with({"prepare": "performed", "spawn": "performed"})
    journey.report("load_app", "errored", 5.0)
    journey.begin("handshake", 4.0)
    step = journey.infer_failure(100.0)
    assert step.name == "load_app"
    assert step.ended_at == 5.0
    assert journey.steps["handshake"].state is StepState.IN_PROGRESS


def spawner_journey(reports: list[tuple[str, str]]) -> Journey:
    """The journey as the spawner keeps it: prepare and spawn done, handshake begun, reports."""
    journey = Journey()
    journey.begin("prepare", 1.0)
    journey.done("prepare", 1.1)
    journey.begin("spawn", 1.2)
    journey.done("spawn", 1.3)
    journey.begin("handshake", 1.3)
    for at, (name, state) in enumerate(reports, start=2):
        assert journey.report(name, state, float(at))
    return journey


SPAWNER_INFERRED = [
    # (the loader's reports before the child died, the step blamed)
    ([], "loader_start"),
    ([("loader_start", "performed")], "load_app"),
    ([("loader_start", "performed"), ("load_app", "in_progress")], "load_app"),
    (
        [("loader_start", "performed"), ("load_app", "in_progress"), ("load_app", "performed")],
        "listen",
    ),
    (
        [("loader_start", "performed"), ("load_app", "in_progress"), ("load_app", "performed"),
         ("listen", "in_progress")],
        "listen",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("reports", "blamed"), SPAWNER_INFERRED)
def test_infer_failure_while_the_core_waits_in_handshake(
    reports: list[tuple[str, str]], blamed: str
) -> None:
    """While the core waits in handshake, the first unfinished loader step is blamed.

    This is the journey the spawner has when it infers a failure: the core began
    'handshake' right after the spawn, before the loader reported anything.
    """
    step = spawner_journey(reports).infer_failure(100.0)
    assert step.name == blamed
