"""A WSGI app whose requests wait on gates the test opens: no sleeps, no timing.

GET /wait?gate=PATH prints "waiting <name> <pid>" and blocks until the file PATH
exists (at most 60 s), then answers its pid. GET /pid answers at once.
"""

import os
import sys
import time
from urllib.parse import parse_qs


def application(environ, start_response):
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    pid = str(os.getpid()).encode()
    if environ["PATH_INFO"] == "/wait":
        gate = query["gate"]
        sys.stdout.write("waiting %s %d\n" % (os.path.basename(gate), os.getpid()))
        sys.stdout.flush()
        deadline = time.time() + 60
        while not os.path.exists(gate) and time.time() < deadline:
            time.sleep(0.01)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [pid]
