// A Node.js app that opens more ports after its main server, as apps with a metrics or
// admin port do: an http server on a free port and a raw TCP server on 127.0.0.1.
"use strict";

const http = require("http");
const net = require("net");

const ports = {};

http
  .createServer((req, res) => {
    res.setHeader("Content-Type", "application/json");
    res.end(JSON.stringify(ports));
  })
  .listen(3000, () => {
    const metrics = http.createServer((req, res) => res.end("metrics ok\n"));
    metrics.listen(0, () => {
      ports.http = metrics.address().port;
    });
    const raw = net.createServer((socket) => socket.end("raw ok\n"));
    raw.listen({ port: 0, host: "127.0.0.1" }, () => {
      ports.tcp = raw.address().port;
    });
  });
