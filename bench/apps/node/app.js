// The benchmark's Node.js app: the same code for every server.
"use strict";
const http = require("http");

const server = http.createServer((req, res) => {
  if (req.url.startsWith("/sleep")) {
    setTimeout(() => res.end("Hello world\n"), 20);
    return;
  }
  res.writeHead(200, { "Content-Type": "text/plain", "Content-Length": "12" });
  res.end("Hello world\n");
});
server.listen(process.env.PORT || 3000, "127.0.0.1");
