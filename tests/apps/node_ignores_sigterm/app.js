// A Node.js app that ignores SIGTERM; Ferryman must still stop it.
"use strict";
process.on("SIGTERM", () => console.log("node app: ignoring SIGTERM"));
require("http")
  .createServer((req, res) => res.end(String(process.pid)))
  .listen(0);
