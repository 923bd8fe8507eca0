"""Ferryman's example app: plain WSGI, no dependencies.

Routes:
  GET  /          a greeting, with the PID of the process that served it
  POST /echo      the request body, sent back
  GET  /slow?s=2  waits s seconds (try several at once and watch them spread over processes)
"""

import os
import time
from urllib.parse import parse_qs


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/echo":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", environ.get("CONTENT_TYPE") or "text/plain")])
        return [body]
    if path == "/slow":
        seconds = float(parse_qs(environ.get("QUERY_STRING", "")).get("s", ["1"])[0])
        time.sleep(min(seconds, 30))
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
        return [("Slept %gs in process %d\n" % (seconds, os.getpid())).encode()]
    if path == "/":
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
        return [("Hello from Ferryman! (process %d)\n" % os.getpid()).encode()]
    start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
    return [b"Not found\n"]
