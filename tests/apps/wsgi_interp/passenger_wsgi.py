"""Passenger's INTERP idiom, unchanged: re-execute under the app's own interpreter.

INTERP comes from the environment here so that the test can choose it.
"""

import os
import sys

INTERP = os.environ["INTERP"]
if sys.executable != INTERP:
    os.execl(INTERP, INTERP, *sys.argv)


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("served by %s\n" % sys.executable).encode()]
