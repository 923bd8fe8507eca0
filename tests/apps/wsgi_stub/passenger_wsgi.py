"""A WSGI stub app for the end-to-end tests: one route per behaviour under test.

Set STUB_VALIDATE=1 to wrap it in wsgiref.validate (with warnings turned into
errors, so any PEP 3333 violation by the server becomes a 500 and a log line).
"""

import hashlib
import json
import os
import sys
import time
import warnings
from urllib.parse import parse_qs

CLOSED = []


def _query(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


class ClosingBody:
    """An iterable with close(), to check the server calls it."""

    def __init__(self, marker):
        self.marker = marker

    def __iter__(self):
        yield b"closing body\n"

    def close(self):
        sys.stderr.write("stub: close() called for %s\n" % self.marker)
        sys.stderr.flush()


#: What /alloc keeps (a leak on purpose).
LEAKED = []


def stuck_in_a_slow_query(seconds):
    """What /hang waits in: its name must show in the stack dump of --max-request-time."""
    time.sleep(seconds)


def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = _query(environ)
    text = [("Content-Type", "text/plain; charset=utf-8")]

    if path == "/":
        start_response("200 OK", text)
        return [b"Hello from Ferryman's stub app\n"]
    if path == "/pid":
        start_response("200 OK", text)
        return [str(os.getpid()).encode()]
    if path == "/alloc":
        # Keeps ?mb=N megabytes for the life of the process (a leak, for --memory-limit).
        LEAKED.append(b"\x01" * (int(q.get("mb", "100")) * 1024 * 1024))  # touched: resident
        start_response("200 OK", text)
        return [str(os.getpid()).encode()]
    if path == "/hang":
        stuck_in_a_slow_query(float(q.get("t", "5")))
        start_response("200 OK", text)
        return [str(os.getpid()).encode()]
    if path == "/slow":
        time.sleep(float(q.get("t", "1")))
        start_response("200 OK", text)
        return [str(os.getpid()).encode()]
    if path == "/echo":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [body]
    if path == "/digest":
        # Read in pieces: checks wsgi.input streaming of big bodies.
        h = hashlib.sha256()
        size = 0
        stream = environ["wsgi.input"]
        while True:
            chunk = stream.read(65536)
            if not chunk:
                break
            h.update(chunk)
            size += len(chunk)
        start_response("200 OK", text)
        return [("%d %s %s" % (size, h.hexdigest(), environ.get("CONTENT_LENGTH", ""))).encode()]
    if path == "/lines":
        lines = environ["wsgi.input"].readlines()
        start_response("200 OK", text)
        return [("%d\n" % len(lines)).encode()] + lines
    if path == "/environ" or path.startswith("/environ/"):
        # /environ/<anything>: the same, for checks of how PATH_INFO is decoded.
        data = {k: v for k, v in environ.items() if isinstance(v, str)}
        data["wsgi.multithread"] = environ["wsgi.multithread"]
        data["wsgi.multiprocess"] = environ["wsgi.multiprocess"]
        data["wsgi.run_once"] = environ["wsgi.run_once"]
        data["wsgi.version"] = list(environ["wsgi.version"])
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(data).encode()]
    if path == "/osenv":
        # The process's own environment (os.environ), for the variables named in ?names=A,B.
        names = [name for name in q.get("names", "").split(",") if name]
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({name: os.environ.get(name) for name in names}).encode()]
    if path == "/stream":
        n = int(q.get("n", "5"))
        delay = float(q.get("delay", "0"))
        start_response("200 OK", text)

        def gen():
            for i in range(n):
                if delay:
                    time.sleep(delay)
                yield b"chunk %d\n" % i

        return gen()
    if path == "/big":
        n = int(q.get("n", "1000000"))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        block = b"x" * 65536

        def gen():
            left = n
            while left > 0:
                piece = block[: min(left, len(block))]
                left -= len(piece)
                yield piece

        return gen()
    if path == "/pattern":
        # n bytes of a pattern that numbers each 16-byte line, in 64 KiB pieces: a piece
        # lost, doubled or out of order changes the body's digest.
        n = int(q.get("n", "1000000"))
        start_response(
            "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(n))]
        )

        def gen():
            data = b"".join(b"%015d\n" % i for i in range((n + 15) // 16))[:n]
            for at in range(0, n, 65536):
                yield data[at : at + 65536]

        return gen()
    if path == "/sse":
        # Server-sent events, one every `delay` s, each carrying the monotonic time it was
        # sent (comparable across processes on one machine).
        n = int(q.get("n", "5"))
        delay = float(q.get("delay", "0.1"))
        headers = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")]
        if q.get("accel") == "no":
            headers = [("Content-Type", "text/plain"), ("X-Accel-Buffering", "no")]
        start_response("200 OK", headers)

        pad = ": " + "p" * int(q.get("pad", "0")) + "\n" if q.get("pad") else ""

        def gen():
            for i in range(n):
                time.sleep(delay)
                yield ("%sid: %d\ndata: %.6f\n\n" % (pad, i, time.monotonic())).encode()

        return gen()
    if path == "/blob":
        # The whole body as one bytes object: the loader sends it in one go.
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [b"b" * int(q.get("n", "1000000"))]
    if path == "/write":
        write = start_response("200 OK", text)
        write(b"written ")
        write(b"directly\n")
        return [b"then returned\n"]
    if path == "/file":
        f = open(__file__, "rb")
        start_response("200 OK", text)
        return environ["wsgi.file_wrapper"](f, 1024)
    if path == "/closing":
        start_response("200 OK", text)
        return ClosingBody(q.get("marker", "x"))
    if path == "/error":
        raise RuntimeError("stub error before start_response")
    if path == "/error-mid":
        start_response("200 OK", text)

        def gen():
            yield b"partial\n"
            raise RuntimeError("stub error mid-response")

        return gen()
    if path == "/exc-info":
        start_response("200 OK", text)
        try:
            raise ValueError("replaced")
        except ValueError:
            start_response("500 Internal Server Error", text, sys.exc_info())
        return [b"error page from the app\n"]
    if path == "/headers":
        start_response(
            "201 Created",
            text + [("X-Custom", "one"), ("X-Custom", "two"), ("Set-Cookie", "a=1")],
        )
        return [b"created\n"]
    if path == "/head-aware":
        # As frameworks do: no body for HEAD, so the length of GET's is unknown here.
        start_response("200 OK", text)
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [b"the GET body\n"]
    if path == "/bad-value":
        # A header value with the control character c=HH (hex) in it.
        char = chr(int(q.get("c", "0b"), 16))
        start_response("200 OK", [("X-Bad", "before" + char + "after")])
        return [b"never sent\n"]
    if path == "/bad-header":
        start_response("200 OK", [("Bad Name", "spaces are not allowed in a header name")])
        return [b"never sent\n"]
    if path == "/status":
        code = q.get("code", "200")
        start_response("%s Whatever" % code, text)
        return [b"status body\n"] if code not in ("204", "304") else []
    if path == "/exit":
        os._exit(int(q.get("code", "3")))
    if path == "/sysexit":
        raise SystemExit(0)
    if path == "/print":
        print("stub says: %s" % q.get("msg", "hi"))
        start_response("200 OK", text)
        return [b"printed\n"]
    start_response("404 Not Found", text)
    return [b"not found\n"]


if os.environ.get("STUB_VALIDATE") == "1":
    from wsgiref.validate import validator

    warnings.simplefilter("error")
    application = validator(app)
else:
    application = app
