"""A generic app: any program that serves HTTP on $PORT (here Python's http.server).

GET or POST /headers answers with the request's header lines as JSON ([name, value]
pairs, in order), so tests can see exactly what Ferryman forwarded. GET /bad-header?c=HH
answers with a header value holding the byte 0xHH (http.server does not check it).
GET /sse?n=N sends N server-sent events, one every 100 ms. GET /garbage answers with
bytes that are not HTTP. GET /osenv?names=A,B answers with those variables of the
process's environment as JSON.
"""

import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _headers(self):
        body = json.dumps([[k, v] for k, v in self.headers.items()]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/headers":
            return self._headers()
        if self.path == "/garbage":
            # Not HTTP at all: the core must answer 502 and say why in its log.
            self.wfile.write(b"this is not an HTTP response\r\n\r\n")
            self.close_connection = True
            return
        if self.path.startswith("/osenv?names="):
            # The process's own environment, for the variables named in ?names=A,B.
            names = [n for n in self.path.partition("=")[2].split(",") if n]
            body = json.dumps({name: os.environ.get(name) for name in names}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path.startswith("/sse?n="):
            # Server-sent events, chunked, one every 100 ms, each with the monotonic
            # time (shared by every process on the machine) it was written at.
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(int(self.path.partition("=")[2])):
                event = ("data: %d %.6f\n\n" % (i, time.monotonic())).encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
                time.sleep(0.1)
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path.startswith("/bad-header?c="):
            char = chr(int(self.path.rpartition("=")[2], 16))
            self.send_response(200)
            self.send_header("X-Bad", "before" + char + "after")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = ("generic pid %d path %s\n" % (os.getpid(), self.path)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if self.path == "/headers":
            return self._headers()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        sys.stderr.write("generic: " + (format % args) + "\n")


port = int(os.environ["PORT"])
print("generic app listening on %d" % port, flush=True)
ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
