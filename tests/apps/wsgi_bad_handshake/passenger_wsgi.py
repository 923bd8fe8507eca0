"""An app that writes garbage to the loader's handshake pipe, then loads normally."""

import json
import os
import sys

handshake_fd = json.loads(sys.argv[1])["handshake_fd"]
os.write(handshake_fd, b"this is not json from the app\n")
print("bad handshake app: wrote garbage to the handshake fd")


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"should never be served\n"]
