// A plain Node.js http app for the end-to-end tests: one route per behaviour.
"use strict";
const http = require("http");
const fs = require("fs");
const crypto = require("crypto");

let inFlight = 0;

function gateOpen(path) {
  return fs.existsSync(path);
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://x");
  // Mounted at a prefix (ferryman start --app /api=DIR): the full path comes, and the
  // prefix in X-Forwarded-Prefix; routes are matched below it, as Express's app.use does.
  const prefix = req.headers["x-forwarded-prefix"] || "";
  const path = prefix && url.pathname.startsWith(prefix)
    ? url.pathname.slice(prefix.length) || "/"
    : url.pathname;
  if (path === "/url" || url.pathname.endsWith("/url")) {
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify({ url: req.url, prefix: prefix, pid: process.pid }));
  } else if (path === "/") {
    res.writeHead(200, { "Content-Type": "text/plain" });
    res.end("Hello from Node " + process.pid + "\n");
  } else if (path === "/pid") {
    res.end(String(process.pid));
  } else if (path === "/sleep") {
    const ms = Number(url.searchParams.get("ms") || 1000);
    setTimeout(() => res.end(String(process.pid)), ms);
  } else if (path === "/echo" || path === "/digest") {
    const hash = crypto.createHash("sha256");
    const chunks = [];
    let size = 0;
    req.on("data", (c) => {
      size += c.length;
      if (path === "/echo") chunks.push(c);
      else hash.update(c);
    });
    req.on("end", () => {
      if (path === "/echo") {
        res.writeHead(200, { "Content-Type": "application/octet-stream" });
        res.end(Buffer.concat(chunks));
      } else {
        res.end(size + " " + hash.digest("hex") + " " + (req.headers["content-length"] || ""));
      }
    });
  } else if (path === "/stream") {
    const n = Number(url.searchParams.get("n") || 5);
    const delay = Number(url.searchParams.get("delay") || 0) * 1000;
    res.writeHead(200, { "Content-Type": "text/plain" });
    let i = 0;
    const next = () => {
      if (i >= n) return res.end();
      res.write("chunk " + i++ + "\n");
      setTimeout(next, delay);
    };
    next();
  } else if (path === "/osenv") {
    // The process's own environment, for the variables named in ?names=A,B.
    const names = (url.searchParams.get("names") || "").split(",").filter((n) => n);
    const found = {};
    for (const name of names) found[name] = name in process.env ? process.env[name] : null;
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify(found));
  } else if (path === "/headers") {
    res.end(JSON.stringify(req.headers));
  } else if (path === "/close") {
    // The app asks to close the connection after this response.
    res.writeHead(200, { Connection: "close", "Content-Type": "text/plain" });
    res.end("closing\n");
  } else if (path === "/no-length") {
    // HTTP/1.0-style: the body ends when the app closes the connection.
    res.socket.write("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close\n");
    res.socket.end();
  } else if (path === "/drop") {
    // The app drops the connection without answering.
    req.socket.destroy();
  } else if (path === "/wait") {
    // Waits for a gate file the test creates; reports how many requests this process holds.
    const gate = url.searchParams.get("gate");
    inFlight += 1;
    console.log("waiting " + require("path").basename(gate) + " " + process.pid + " " + inFlight);
    const poll = setInterval(() => {
      if (gateOpen(gate)) {
        clearInterval(poll);
        inFlight -= 1;
        res.end(String(process.pid));
      }
    }, 10);
  } else if (path === "/exit") {
    res.end("bye");
    setTimeout(() => process.exit(1), 10);
  } else {
    res.writeHead(404);
    res.end("not found\n");
  }
});

// Any port: Ferryman's loader makes it listen on its own socket.
server.listen(process.env.PORT || 8080, () => {
  console.log("node_http listening");
});
