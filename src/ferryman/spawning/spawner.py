"""Spawner: starts one app process and waits until it is ready (or explains why not).

Direct spawning, by the app's kind (``kinds.AppKind``):

* kinds with a loader (Python WSGI, Node.js): fork+exec of Ferryman's loader under
  the app's interpreter. The loader gets its arguments as one JSON argument, reports
  its journey as JSON lines on a handshake pipe (its number is in the JSON), then
  ``ready`` with the handshake version, its socket, protocol and concurrency.
* kinds without (any-language apps): the app's own command under ``/bin/sh -c``
  (``exec``-ing it when it is one simple command) with ``$PORT`` set to a free loopback
  port; it is ready once the port accepts connections.

All of it within ``start_timeout``; on any failure the child is killed and
reaped and a SpawnError says which step failed and why.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any

from ..config import Config
from ..errors import SpawnError, redacted_environment
from ..instance import InstanceDir
from .child import Child
from .detect import AppSpec
from .journey import Journey, StepState
from .kinds import HANDSHAKE_VERSION

log = logging.getLogger("ferryman")

#: Environment variables that carry the app's environment name (as Passenger sets them).
ENVIRONMENT_VARIABLES = ("WSGI_ENV", "PASSENGER_APP_ENV", "RACK_ENV", "RAILS_ENV", "NODE_ENV")
#: Grace periods when stopping a process: after its stdin closes, then after SIGTERM.
STOP_EOF_GRACE = 5.0
STOP_TERM_GRACE = 5.0
#: How often a generic app's port is tried while it starts.
PORT_POLL_INTERVAL = 0.05
#: What makes a command more than one simple command (lists, pipes, redirections,
#: subshells, substitutions, several lines).
_NOT_SIMPLE = re.compile(r"[;&|<>()`\n]|\$\(")
_ASSIGNMENT = re.compile(r"\s*[A-Za-z_][A-Za-z0-9_]*=")
#: Shell keywords and builtins that the shell must run itself (some also exist as programs,
#: e.g. /usr/bin/cd or /usr/bin/time, which would do something else under exec).
_SHELL_WORDS = frozenset(
    ["!", ".", ":", "[[", "{", "alias", "bg", "break", "builtin", "case", "cd", "command",
     "continue", "declare", "eval", "exec", "exit", "export", "fg", "for", "getopts", "hash",
     "if", "jobs", "let", "local", "read", "readonly", "return", "set", "shift", "source",
     "time", "times", "trap", "type", "ulimit", "umask", "unalias", "unset", "until", "wait",
     "while"]
)  # fmt: skip


def command_argv(command: str, path: str | None) -> list[str]:
    """How to run a generic app's command: ``/bin/sh -c``, with ``exec`` in front when the
    command is one simple command running a program (a path, or a name found on ``path``),
    so that the process Ferryman tracks, logs and signals is the app itself rather than a
    shell waiting for it."""
    words = command.split()
    if (
        not words
        or _NOT_SIMPLE.search(command)
        or _ASSIGNMENT.match(command)
        or words[0] in _SHELL_WORDS
        or ("/" not in words[0] and shutil.which(words[0], path=path) is None)
    ):
        return ["/bin/sh", "-c", command]
    return ["/bin/sh", "-c", "exec " + command]


@dataclass(frozen=True, slots=True)
class SpawnRecord:
    """How a process was started: kept to explain its death if it dies right after."""

    journey: Journey
    #: The app's environment, secrets redacted.
    environment: list[tuple[str, str]]
    interpreter: str
    interpreter_version: str


@dataclass(frozen=True, slots=True)
class Ready:
    """Where a ready process listens, which protocol it speaks, how many requests it takes."""

    address: str | tuple[str, int]  # a Unix socket path, or (host, port) on loopback
    protocol: str  # "session" or "http"
    concurrency: int  # 0 = unlimited
    #: Seconds to wait after closing its stdin before SIGTERM (0: it does not watch stdin).
    eof_grace: float = STOP_EOF_GRACE
    record: SpawnRecord | None = None


class HandshakeReader(asyncio.Protocol):
    """Reads the loader's JSON lines: journey steps, then ``ready`` or ``error``."""

    def __init__(self, journey: Journey) -> None:
        self.journey = journey
        self.ready: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.malformed: str | None = None
        #: The interpreter's version and path, as the loader reported them.
        self.interpreter = ""
        self._buffer = b""
        #: Resolved on "ready", on "error", or when the pipe closes.
        self.finished = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line.strip():
                self._handle(line)

    def _handle(self, line: bytes) -> None:
        now = time.time()
        try:
            message = json.loads(line)
            if not isinstance(message, dict):
                raise ValueError("not an object")
        except ValueError:
            self.malformed = f"not a JSON object: {line[:200]!r}"
            return
        if "step" in message:
            if isinstance(message.get("interpreter"), str):
                self.interpreter = message["interpreter"]
            if not self.journey.report(str(message["step"]), str(message.get("state")), now):
                self.malformed = f"unknown step report: {line[:200]!r}"
        elif isinstance(message.get("ready"), dict):
            self.ready = message["ready"]
            self._finish()
        elif isinstance(message.get("error"), dict):
            self.error = message["error"]
            self._finish()
        else:
            self.malformed = f"unexpected message: {line[:200]!r}"

    def _finish(self) -> None:
        if not self.finished.done():
            self.finished.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._buffer.strip():
            self._handle(self._buffer)
            self._buffer = b""
        self._finish()


class Attempt:
    """One spawn attempt: what a SpawnError needs to explain it, gathered as it goes."""

    def __init__(
        self, spawner: Spawner, env: dict[str, str], interpreter: str, journey: Journey
    ) -> None:
        self.spawner = spawner
        self.env = env
        self.interpreter = interpreter
        self.journey = journey
        self.child: Child | None = None
        self.reader: HandshakeReader | None = None
        self.socket_path = ""

    def record(self) -> SpawnRecord:
        return SpawnRecord(
            self.journey,
            redacted_environment(self.env),
            self.interpreter,
            self.reader.interpreter if self.reader is not None else "",
        )

    def error(self, summary: str, category: str, step: str, details: str = "") -> SpawnError:
        # A core step still waiting (the handshake) ended with the failure too.
        now = time.time()
        for other in self.journey.steps.values():
            if other.state is StepState.IN_PROGRESS and other.name != step:
                self.journey.fail(other.name, now)
        return SpawnError(
            summary,
            category=category,
            step=step,
            journey=self.journey,
            output=self.child.output_lines() if self.child is not None else [],
            details=details,
            app_root=str(self.spawner.spec.root),
            environment=redacted_environment(self.env),
            interpreter=self.interpreter,
            interpreter_version=self.reader.interpreter if self.reader is not None else "",
        )

    async def launch(self, argv: list[str], pass_fds: tuple[int, ...] = ()) -> Child:
        """Start the child (the 'spawn' step); OSError becomes interpreter_not_found."""
        journey = self.journey
        journey.begin("spawn", time.time())
        try:
            self.child = await Child.launch(
                argv, env=self.env, cwd=str(self.spawner.spec.root), pass_fds=pass_fds
            )
        except OSError as exc:
            journey.fail("spawn", time.time())
            why = exc.strerror or str(exc)
            if os.path.isdir(argv[0]):
                why = f"it is a directory (the interpreter is inside it, e.g. {argv[0]}/bin/...)"
            raise self.error(
                f"cannot run {argv[0]!r}: {why}", "interpreter_not_found", "spawn"
            ) from exc
        journey.done("spawn", time.time())
        return self.child

    async def timed_out(self, step_name: str | None = None, detail: str = "") -> SpawnError:
        """Kill the child for running past start_timeout; the error to raise."""
        child = self.child
        assert child is not None
        now = time.time()
        journey = self.journey
        step = journey.steps[step_name] if step_name else journey.first_unperformed()
        started = step.started_at is not None
        journey.fail(step.name, now)
        child.kill()
        await asyncio.shield(child.exited)
        await child.finish_output(0.5)
        timeout = self.spawner.config.start_timeout
        return self.error(
            f"the app did not become ready within {timeout:g} s (start_timeout)"
            f" {'while' if started else 'before'} {step.title.lower()}{detail}; it was killed",
            "timeout",
            step.name,
        )

    def exited(self) -> SpawnError:
        """The child exited during start: the error to raise."""
        child = self.child
        assert child is not None
        step = self.journey.infer_failure(time.time())
        code = child.exited.result() if child.exited.done() else None
        return self.error(
            f"the app exited during start ({_describe_exit(code)}) while {step.title.lower()}",
            "exited",
            step.name,
        )


class Spawner:
    """Starts processes for one app."""

    def __init__(self, config: Config, spec: AppSpec, instance: InstanceDir) -> None:
        self.config = config
        self.spec = spec
        self.instance = instance

    def app_environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        for name in ENVIRONMENT_VARIABLES:
            env[name] = self.config.environment
        env.update(self.config.envvar)
        return env

    async def spawn(self) -> tuple[Child, Ready]:
        """Start one process and return it once ready; raise SpawnError otherwise."""
        if self.spec.kind.loader is None:
            child, ready = await self._spawn_command()
        else:
            child, ready = await self._spawn_loader()
        log.info(
            "App %d ready: %s (%s protocol, concurrency %s)",
            child.pid,
            self.spec.root,
            ready.protocol,
            ready.concurrency or "unlimited",
        )
        return child, ready

    # -- apps started through one of Ferryman's loaders ---------------------------------------

    async def _spawn_loader(self) -> tuple[Child, Ready]:
        kind = self.spec.kind
        assert kind.loader is not None and kind.interpreter_setting is not None
        if self.spec.interpreter is not None:
            interpreter = self.spec.interpreter.path  # found and checked at start
        else:
            interpreter = str(getattr(self.config, kind.interpreter_setting))
        attempt = Attempt(self, self.app_environment(), interpreter, Journey.of(kind.steps))
        journey = attempt.journey
        journey.begin("prepare", time.time())
        socket_path = attempt.socket_path = self.instance.next_app_socket()
        hs_r, hs_w = os.pipe()
        handshake_transport: asyncio.ReadTransport | None = None
        try:
            args = {
                "app_root": str(self.spec.root),
                "startup_file": self.spec.startup_file,
                "app_attribute": self.spec.app_attribute or None,
                "socket": socket_path,
                "threads": self.config.thread_count,
                "handshake_fd": hs_w,
            }
            journey.done("prepare", time.time())
            try:
                child = await attempt.launch(
                    [interpreter, str(kind.loader), json.dumps(args)], pass_fds=(hs_w,)
                )
            finally:
                os.close(hs_w)  # the child has its copy; ours would hide the child's EOF
                hs_w = -1
            journey.begin("handshake", time.time())
            hs_file = os.fdopen(hs_r, "rb", buffering=0)
            hs_r = -1  # owned by hs_file now
            try:
                (
                    handshake_transport,
                    attempt.reader,
                ) = await asyncio.get_running_loop().connect_read_pipe(
                    lambda: HandshakeReader(journey), hs_file
                )
            except BaseException:
                hs_file.close()
                raise
            ready = await self._await_ready(attempt)
            journey.done("handshake", time.time())
            journey.done("finish", time.time())
            return child, ready
        except BaseException:
            if attempt.child is not None:
                await _kill_and_release(attempt.child)
                _unlink(socket_path)
            raise
        finally:
            if handshake_transport is not None:
                handshake_transport.close()
            for fd in (hs_r, hs_w):
                if fd >= 0:
                    os.close(fd)

    async def _await_ready(self, attempt: Attempt) -> Ready:
        child, reader, journey = attempt.child, attempt.reader, attempt.journey
        assert child is not None and reader is not None
        done, _ = await asyncio.wait(
            [reader.finished, child.exited],
            timeout=self.config.start_timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if reader.finished in done and reader.ready is not None and not reader.malformed:
            return self._check_ready(reader.ready, attempt)
        now = time.time()
        if not done:
            raise await attempt.timed_out()
        # The handshake ended without a usable "ready", or the process exited: collect why.
        if reader.malformed and not child.exited.done():
            child.kill()  # it may well go on running: it cannot be trusted to serve
        if not child.exited.done():
            await child.wait(1.0)  # a loader that reported an error exits by itself
        await child.finish_output(1.0)
        if reader.error is not None:
            error = reader.error
            step_name = str(error.get("step", "load_app"))
            if step_name in journey.steps:
                journey.fail(step_name, now)
            else:
                step_name = journey.infer_failure(now).name
            raise attempt.error(
                str(error.get("message", "the app failed to load")),
                str(error.get("kind", "import_error")),
                step_name,
                details=str(error.get("traceback", "")),
            )
        if reader.malformed:
            journey.fail("handshake", now)
            raise attempt.error(
                f"the loader sent malformed handshake data: {reader.malformed}",
                "handshake_malformed",
                "handshake",
            )
        if journey.steps["loader_start"].state is StepState.NOT_STARTED:
            code = child.exited.result() if child.exited.done() else None
            journey.fail("loader_start", now)
            raise attempt.error(
                f"the interpreter {attempt.interpreter!r} exited ({_describe_exit(code)}) "
                "before Ferryman's loader started: is it the right interpreter, and new enough?",
                "interpreter_failed",
                "loader_start",
            )
        raise attempt.exited()

    def _check_ready(self, ready: dict[str, Any], attempt: Attempt) -> Ready:
        socket_path = ready.get("socket")  # must be the path Ferryman chose
        protocol = ready.get("protocol")
        concurrency = ready.get("concurrency")
        version = ready.get("version")
        if version != HANDSHAKE_VERSION:
            attempt.journey.fail("handshake", time.time())
            raise attempt.error(
                f"the loader speaks handshake version {version!r} and this Ferryman core "
                f"speaks version {HANDSHAKE_VERSION}: the loader that ran is not the one that "
                f"came with this Ferryman ({attempt.spawner.spec.kind.loader}); reinstall "
                "Ferryman, and restart it after an upgrade",
                "loader_mismatch",
                "handshake",
            )
        if (
            socket_path != attempt.socket_path  # the one Ferryman chose, nothing else
            or protocol != self.spec.kind.protocol
            or not isinstance(concurrency, int)
            or isinstance(concurrency, bool)
            or concurrency < 0
        ):
            attempt.journey.fail("handshake", time.time())
            raise attempt.error(
                f"the loader sent malformed handshake data: {json.dumps(ready)[:200]}",
                "handshake_malformed",
                "handshake",
            )
        return Ready(attempt.socket_path, protocol, concurrency, record=attempt.record())

    # -- apps started by their own command, listening on $PORT ------------------------------------

    async def _spawn_command(self) -> tuple[Child, Ready]:
        env = self.app_environment()
        attempt = Attempt(self, env, "/bin/sh", Journey.of(self.spec.kind.steps))
        journey = attempt.journey
        journey.begin("prepare", time.time())
        port = _free_port()
        env["PORT"] = str(port)
        journey.done("prepare", time.time())
        try:
            argv = command_argv(self.spec.start_command, env.get("PATH"))
            child = await attempt.launch(argv)
            journey.begin("listen", time.time())
            await self._await_port(attempt, port)
            journey.done("listen", time.time())
            journey.done("finish", time.time())
            return child, Ready(
                ("127.0.0.1", port), "http", 0, eof_grace=0.0, record=attempt.record()
            )
        except BaseException:
            if attempt.child is not None:
                await _kill_and_release(attempt.child)
            raise

    async def _await_port(self, attempt: Attempt, port: int) -> None:
        child = attempt.child
        assert child is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.start_timeout
        while True:
            try:
                transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
            except OSError:
                pass
            else:
                transport.close()
                return
            if child.exited.done():
                await child.finish_output(1.0)
                raise attempt.exited()
            if loop.time() >= deadline:
                raise await attempt.timed_out("listen", f" (PORT={port}, on 127.0.0.1)")
            await child.wait(PORT_POLL_INTERVAL)


def _free_port() -> int:
    """A loopback port nobody listens on now (the app binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _kill_and_release(child: Child) -> None:
    child.kill()
    await asyncio.shield(child.exited)
    await child.finish_output(0.5)
    child.release()


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
