"""A loader for a made-up app kind, for the test that adding a kind is one registry entry.

It does what every loader does: reads its JSON argument, reports its journey on the
handshake fd, sends ``ready`` (with FAKE_HANDSHAKE_VERSION, default 1), serves the
startup file's text over HTTP on the Unix socket it was given, and exits when its
stdin (the owner pipe) closes.
"""

import json
import os
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

args = json.loads(sys.argv[1])
hs = args["handshake_fd"]


def send(message):
    os.write(hs, (json.dumps(message) + "\n").encode())


send({"step": "loader_start", "state": "performed"})
with open(os.path.join(args["app_root"], args["startup_file"]), "rb") as fh:
    TEXT = fh.read()
send({"step": "load_app", "state": "performed"})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(TEXT)))
        self.end_headers()
        self.wfile.write(TEXT)

    def address_string(self):
        return "unix"


class UnixHTTPServer(HTTPServer):
    address_family = socket.AF_UNIX

    def server_bind(self):
        self.socket.bind(self.server_address)


server = UnixHTTPServer(args["socket"], Handler)
send({"step": "listen", "state": "performed"})
send({"step": "ready", "state": "performed"})
version = int(os.environ.get("FAKE_HANDSHAKE_VERSION", "1"))
ready = {"socket": args["socket"], "protocol": "http", "concurrency": 0, "version": version}
send({"ready": ready})
os.close(hs)
threading.Thread(target=server.serve_forever, daemon=True).start()
sys.stdin.read()  # the owner pipe: EOF means stop
