"""An app that takes BOOT_SECONDS (default 2) to import, as big apps do: a restart that
made requests wait for new processes would show in their latency."""

import os
import time

time.sleep(float(os.environ.get("BOOT_SECONDS", "2")))
VERSION = os.environ.get("APP_VERSION", "1")


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("%d %s" % (os.getpid(), VERSION)).encode()]
