"""An app that starts fine and dies 0.3 s later: a crash loop if restarted at once."""

import os
import threading
import time


def _die():
    time.sleep(0.3)
    print("dies-early app: exiting now")
    os._exit(1)


threading.Thread(target=_die, daemon=True).start()


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
