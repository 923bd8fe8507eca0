"""Journey: the named steps of one spawn, each with its state and timing.

The core records its own steps; the loader reports its steps through the
handshake. When a spawn fails, the journey says which step failed — and when the
child died without saying, which step it must have been in.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class StepState(enum.Enum):
    NOT_STARTED = "not started"
    IN_PROGRESS = "in progress"
    PERFORMED = "performed"
    ERRORED = "errored"


#: A step: its name, who reports it ("core", "loader" or "app") and its title.
StepSpec = tuple[str, str, str]
#: The steps of a spawn through one of Ferryman's loaders, in order.
LOADER_STEPS: tuple[StepSpec, ...] = (
    ("prepare", "core", "Preparing the spawn (socket path, environment)"),
    ("spawn", "core", "Starting the interpreter (fork + exec)"),
    ("loader_start", "loader", "Starting Ferryman's loader in the app process"),
    ("load_app", "loader", "Loading the application"),
    ("listen", "loader", "Listening on the app socket"),
    ("ready", "loader", "Reporting ready to Ferryman"),
    ("handshake", "core", "Waiting for the app process to report ready"),
    ("finish", "core", "Registering the ready process"),
)

#: An ASGI app runs its lifespan startup before it listens: a step of its own.
ASGI_STEPS: tuple[StepSpec, ...] = (
    *LOADER_STEPS[:4],
    ("lifespan_startup", "loader", "Running the app's lifespan startup"),
    *LOADER_STEPS[4:],
)


@dataclass(slots=True)
class Step:
    name: str
    side: str
    title: str
    state: StepState = StepState.NOT_STARTED
    started_at: float | None = None
    ended_at: float | None = None

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at


#: The steps of an app started by its own command (no loader): Ferryman waits for $PORT.
COMMAND_STEPS: tuple[StepSpec, ...] = (
    ("prepare", "core", "Preparing the spawn (port, environment)"),
    ("spawn", "core", "Starting the app's command"),
    ("listen", "app", "Waiting for the app to accept connections on $PORT"),
    ("finish", "core", "Registering the ready process"),
)


@dataclass(slots=True)
class Journey:
    steps: dict[str, Step] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.steps:
            self.steps = {name: Step(name, side, title) for name, side, title in LOADER_STEPS}

    @classmethod
    def of(cls, steps: tuple[StepSpec, ...]) -> Journey:
        return cls({name: Step(name, side, title) for name, side, title in steps})

    def begin(self, name: str, at: float) -> None:
        step = self.steps[name]
        step.state = StepState.IN_PROGRESS
        step.started_at = at

    def done(self, name: str, at: float) -> None:
        step = self.steps[name]
        if step.started_at is None:
            step.started_at = at
        step.state = StepState.PERFORMED
        step.ended_at = at

    def fail(self, name: str, at: float) -> None:
        step = self.steps[name]
        if step.started_at is None:
            step.started_at = at
        step.state = StepState.ERRORED
        step.ended_at = at

    def report(self, name: str, state: str, at: float) -> bool:
        """A step reported by the loader; False if the name or state is unknown."""
        if name not in self.steps or self.steps[name].side != "loader":
            return False
        if state == "in_progress":
            self.begin(name, at)
        elif state == "performed":
            self.done(name, at)
        elif state == "errored":
            self.fail(name, at)
        else:
            return False
        return True

    def failed_step(self) -> Step | None:
        for step in self.steps.values():
            if step.state is StepState.ERRORED:
                return step
        return None

    def infer_failure(self, at: float) -> Step:
        """Mark and return the step that must have failed, when nobody said which.

        Steps are listed in the order they happen (the core's handshake step waits
        through the loader's steps, so it comes after them): the first step not
        performed is the one the spawn was in. If all were performed, the last fails.
        """
        failed = self.failed_step()
        if failed is not None:
            return failed
        step = self.first_unperformed()
        self.fail(step.name, at)
        return step

    def first_unperformed(self) -> Step:
        """The first step not performed (the last step if all were)."""
        steps = list(self.steps.values())
        return next((s for s in steps if s.state is not StepState.PERFORMED), steps[-1])
