"""The benchmark's WSGI app: the same code for every server."""

import os
import time


def respond(start_response, body):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/sleep":
        # I/O-bound work: ?ms=20 by default
        query = environ.get("QUERY_STRING", "")
        ms = int(query[3:]) if query.startswith("ms=") else 20
        time.sleep(ms / 1000.0)
    elif path == "/slow":
        time.sleep(0.2)
    elif path == "/pid-sleep":
        time.sleep(0.05)
        return respond(start_response, str(os.getpid()).encode())
    elif path == "/upload":
        stream = environ["wsgi.input"]
        size = 0
        while True:
            chunk = stream.read(65536)
            if not chunk:
                break
            size += len(chunk)
        body = str(size).encode()
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        )
        return [body]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "12")])
    return [b"Hello world\n"]
