"""Child: one app OS process and every fd that belongs to it.

A child owns: the write end of its *owner pipe* (its stdin; closing it tells the
child to exit, and the kernel closes it if the core dies), a pidfd that becomes
readable when the child exits (so it is reaped without SIGCHLD handlers), and the
read ends of its stdout and stderr pipes, logged line by line.
``release()`` frees them all; ``stop()`` and ``kill()`` end the process.

App output is logged by the ``ferryman.app`` logger, whose level is
``--app-output-level`` and not ``--log-level``: quieting Ferryman's own messages
never hides an app's traceback. Lines from stdout are logged at INFO, lines from
stderr (tracebacks, warnings, most logging libraries) at WARNING.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import subprocess
from collections import deque
from collections.abc import Callable, Sequence

log = logging.getLogger("ferryman")
#: App output's own logger (its level: --app-output-level).
app_log = logging.getLogger("ferryman.app")

#: Lines of output kept for error reports.
OUTPUT_LINES_KEPT = 200
_MAX_LINE = 16 * 1024


class OutputReader(asyncio.Protocol):
    """Logs one of a child's output streams as ``App <pid> output: <line>`` at ``level``,
    and keeps the last lines (in ``lines``, shared by its streams, in arrival order)."""

    def __init__(self, pid: int, level: int, lines: deque[str]) -> None:
        self.pid = pid
        self.level = level
        self.lines = lines
        self._partial = b""
        self.closed = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        if len(self._partial) > _MAX_LINE:
            complete.append(self._partial)
            self._partial = b""
        for raw in complete:
            self._emit(raw)

    def _emit(self, raw: bytes) -> None:
        line = raw.rstrip(b"\r").decode("utf-8", "replace")
        self.lines.append(line)
        app_log.log(self.level, "App %d output: %s", self.pid, line)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._partial:
            self._emit(self._partial)
            self._partial = b""
        if not self.closed.done():
            self.closed.set_result(None)


class Child:
    """A running app process (see module docstring for what it owns)."""

    def __init__(self, popen: subprocess.Popen[bytes], owner_fd: int) -> None:
        self.popen = popen
        self.pid = popen.pid
        self._owner_fd: int | None = owner_fd
        self._loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[int] = self._loop.create_future()
        self._exit_callbacks: list[Callable[[int], None]] = []
        self._output_transports: list[asyncio.ReadTransport] = []
        self.outputs: list[OutputReader] = []
        #: The last lines of its stdout and stderr, in the order they came.
        self.lines: deque[str] = deque(maxlen=OUTPUT_LINES_KEPT)
        #: Whether we signalled it: a death by a signal, or a failure exit code, is then
        #: our doing, not a crash.
        self.signalled = False
        self._pidfd: int | None = os.pidfd_open(self.pid)
        self._loop.add_reader(self._pidfd, self._on_exit)

    @classmethod
    async def launch(
        cls,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        cwd: str,
        pass_fds: Sequence[int] = (),
    ) -> Child:
        """Fork+exec ``argv`` with stdin = owner pipe, stdout and stderr = two pipes.

        The child runs in its own session, so the terminal's Ctrl-C reaches only
        the core, which then stops the children in order. Raises OSError if the
        program cannot be executed; nothing is left open in that case.
        """
        fds: list[int] = []  # every pipe end not yet handed to an owner
        try:
            owner_r, owner_w = _pipe(fds)
            out_r, out_w = _pipe(fds)
            err_r, err_w = _pipe(fds)
            try:
                popen = subprocess.Popen(
                    argv,
                    stdin=owner_r,
                    stdout=out_w,
                    stderr=err_w,
                    pass_fds=tuple(pass_fds),
                    close_fds=True,
                    cwd=cwd,
                    env=env,
                    start_new_session=True,
                )
            finally:
                for fd in (owner_r, out_w, err_w):  # the child has its copies
                    _close(fd, fds)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        fds.remove(owner_w)
        child = cls(popen, owner_w)
        try:
            for fd, level in ((out_r, logging.INFO), (err_r, logging.WARNING)):
                reader_file = os.fdopen(fd, "rb", buffering=0)
                fds.remove(fd)  # owned by the file object now
                try:
                    transport, reader = await child._loop.connect_read_pipe(
                        functools.partial(OutputReader, child.pid, level, child.lines),
                        reader_file,
                    )
                except BaseException:
                    reader_file.close()
                    raise
                child._output_transports.append(transport)
                child.outputs.append(reader)
            return child
        except BaseException:
            for fd in fds:
                os.close(fd)
            child.kill()
            await child.exited
            child.release()
            raise

    # -- exit --------------------------------------------------------------------------------

    def _on_exit(self) -> None:
        self._close_pidfd()
        # Whatever the app started in its process group goes with it (e.g. the server a
        # `sh -c` command ran, if it ignored the SIGTERM that ended the shell). Before the
        # reap: until then the zombie keeps its PID, so the group ID names only our group.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        code = self.popen.wait()  # the pidfd says it exited: this reaps without blocking
        if not self.exited.done():
            self.exited.set_result(code)
        callbacks, self._exit_callbacks = self._exit_callbacks, []
        for callback in callbacks:
            callback(code)

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def on_exit(self, callback: Callable[[int], None]) -> None:
        if self.exited.done():
            callback(self.exited.result())
        else:
            self._exit_callbacks.append(callback)

    @property
    def running(self) -> bool:
        return not self.exited.done()

    def output_lines(self) -> list[str]:
        return list(self.lines)

    # -- ending it -----------------------------------------------------------------------------

    def tell(self, word: bytes) -> None:
        """Write ``word`` on the owner pipe (a loader reads it as a request, see
        docs/session-protocol.md); never blocks, and a full or closed pipe is ignored."""
        if self._owner_fd is None:
            return
        try:
            os.set_blocking(self._owner_fd, False)
            os.write(self._owner_fd, word)
        except OSError:
            pass

    def close_owner_pipe(self) -> None:
        if self._owner_fd is not None:
            os.close(self._owner_fd)
            self._owner_fd = None

    def signal(self, sig: signal.Signals) -> None:
        """Signal the child's process group (the app and anything it started)."""
        if self.running:
            self.signalled = True
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass
            except PermissionError:
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    async def wait(self, timeout: float) -> bool:
        """Whether the child exited within ``timeout`` seconds."""
        if not self.exited.done():
            try:
                await asyncio.wait_for(asyncio.shield(self.exited), timeout)
            except TimeoutError:
                return False
        return True

    async def stop(self, eof_grace: float, term_grace: float) -> int:
        """Owner pipe EOF, then SIGTERM, then SIGKILL; returns the exit status."""
        self.close_owner_pipe()
        if not eof_grace or not await self.wait(eof_grace):
            if eof_grace:
                log.warning("App %d did not exit after its stdin closed; sending SIGTERM", self.pid)
            self.signal(signal.SIGTERM)
            if not await self.wait(term_grace):
                log.warning("App %d ignored SIGTERM; sending SIGKILL", self.pid)
                self.kill()
        return await self.exited

    async def finish_output(self, timeout: float = 1.0) -> None:
        """Wait briefly for the output pipes to reach EOF, so the last lines are logged."""
        pending = [reader.closed for reader in self.outputs if not reader.closed.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    def release(self) -> None:
        """Close every fd the child owns. The process must have exited (or be killed)."""
        self.close_owner_pipe()
        for transport in self._output_transports:
            transport.close()
        self._output_transports.clear()
        if not self.exited.done():
            # Still running: kill it; the pidfd reader reaps it when it dies.
            self.kill()
        else:
            self._close_pidfd()


def _pipe(fds: list[int]) -> tuple[int, int]:
    """A pipe whose ends are added to ``fds`` (to be closed by whoever fails)."""
    read, write = os.pipe()
    fds += (read, write)
    return read, write


def _close(fd: int, fds: list[int]) -> None:
    os.close(fd)
    fds.remove(fd)
