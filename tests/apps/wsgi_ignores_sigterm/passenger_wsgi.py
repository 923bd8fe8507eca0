"""An app that ignores SIGTERM (its own handler does nothing, as some apps' cleanup
handlers do) and whose /hang never ends: the worst case for the server's stop, which must
still end within the graceful timeout plus its margin (SIGKILL)."""

import os
import signal
import time

signal.signal(signal.SIGTERM, lambda signum, frame: print("app: SIGTERM ignored", flush=True))


def application(environ, start_response):
    if environ["PATH_INFO"] == "/hang":
        print("app: hanging", flush=True)
        time.sleep(3600)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
