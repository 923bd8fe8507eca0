"""The log: one sink (stderr or --log-file) for the messages and the access log.

Access lines are formatted cheaply and written in batches (every 100 ms or
64 KiB), because the access log sits on the hot path. Any other log message
flushes the batch first, so lines keep their order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time

from .config import Config
from .errors import ConfigError
from .http.request import RequestHead

_FLUSH_DELAY = 0.1
_FLUSH_SIZE = 64 * 1024


class LogSink:
    """Owns the log's file descriptor (when it is a file) and the access-line batch."""

    def __init__(self, fd: int, owned: bool, path: str | None = None) -> None:
        self.fd = fd
        self.owned = owned
        self.path = path
        self._batch: list[str] = []
        self._batch_size = 0
        self._flush_handle: asyncio.TimerHandle | None = None

    @classmethod
    def open(cls, path: str | None) -> LogSink:
        if path is None:
            return cls(sys.stderr.fileno(), owned=False)
        try:
            fd = _open_log(path)
        except OSError as exc:
            raise ConfigError(
                f"invalid value {path!r} for log_file: cannot open it: {exc.strerror}"
            ) from exc
        return cls(fd, owned=True, path=path)

    def reopen(self) -> None:
        """Open the log file anew (after logrotate moved it); keep the old one on failure."""
        if not self.owned or self.path is None:
            return
        self.flush()
        try:
            fd = _open_log(self.path)
        except OSError:
            return
        old, self.fd = self.fd, fd
        os.close(old)

    def _write(self, text: str) -> None:
        data = text.encode("utf-8", "replace")
        while data:
            try:
                written = os.write(self.fd, data)
            except InterruptedError:
                continue
            except OSError:
                return  # the log is gone (closed pipe, full disk): nothing better to do
            data = data[written:]

    def write(self, text: str) -> None:
        if self._batch:
            self.flush()
        self._write(text)

    def batch(self, line: str) -> None:
        self._batch.append(line)
        self._batch_size += len(line)
        if self._batch_size >= _FLUSH_SIZE:
            self.flush()
        elif self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._flush_handle = loop.call_later(_FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._batch:
            text = "".join(self._batch)
            self._batch.clear()
            self._batch_size = 0
            self._write(text)

    def close(self) -> None:
        self.flush()
        if self.owned:
            os.close(self.fd)
            self.owned = False


def _open_log(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)


class SinkHandler(logging.Handler):
    def __init__(self, sink: LogSink) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


class Formatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        ms = int(record.msecs)
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created)) + f".{ms:03d}"


def setup_logging(config: Config) -> LogSink:
    """Route the 'ferryman' logger to the configured sink; returns the sink (caller closes it)."""
    sink = LogSink.open(config.log_file)
    handler = SinkHandler(sink)
    handler.setFormatter(Formatter("%(asctime)s %(levelname)-7s [%(process)d] %(message)s"))
    logger = logging.getLogger("ferryman")
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(config.log_level.upper())
    logger.propagate = False
    # App output has its own level: --log-level quiets Ferryman, not the app.
    logging.getLogger("ferryman.app").setLevel(config.app_output_level.upper())
    return sink


class AccessLog:
    """Combined Log Format lines for every request, batched into the sink."""

    def __init__(self, sink: LogSink, enabled: bool) -> None:
        self.sink = sink
        self.enabled = enabled
        self._second = -1
        self._stamp = ""

    def _timestamp(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(second))
        return self._stamp

    def record(self, head: RequestHead, status: int, bytes_sent: int) -> None:
        if not self.enabled:
            return
        referer = head.header(b"referer")
        agent = head.header(b"user-agent")
        # Behind a trusted proxy, the client it names, as the app sees it.
        client = head.client_addr
        request = b"%s %s HTTP/%s" % (head.method, head.target, head.version)
        self.sink.batch(
            f"{client.decode('latin-1')} - - {self._timestamp()}"
            f' "{_quoted(request)}" {status} {bytes_sent or "-"}'
            f' "{_quoted(referer) if referer else "-"}" "{_quoted(agent) if agent else "-"}"\n'
        )


def _quoted(value: bytes) -> str:
    text = value.decode("latin-1")
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return text.encode("unicode_escape").decode("ascii").replace('"', '\\"')
