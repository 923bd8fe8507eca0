// An Express fixture app (package.json "main"); its dependencies come from package-lock.json.
"use strict";
const express = require("express");
const { WebSocketServer } = require("ws");

const app = express();
app.use(express.raw({ type: "*/*", limit: "50mb" }));

app.get("/", (req, res) => res.type("text").send("Hello from Express " + process.pid + "\n"));
app.post("/echo", (req, res) => res.type("application/octet-stream").send(req.body));
app.get("/json", (req, res) => res.json({ pid: process.pid, ip: req.ip, query: req.query }));
app.get("/stream", (req, res) => {
  const n = Number(req.query.n || 3);
  res.type("text");
  for (let i = 0; i < n; i++) res.write("chunk " + i + "\n");
  res.end();
});

const server = app.listen(3000, () => console.log("express listening"));

// WebSockets with the ws library on the same server: the first message is the pid, then
// every message is echoed; the text "close:CODE" makes the server close with CODE.
const wss = new WebSocketServer({ server, path: "/ws" });
// Ferryman says it is stopping: close the WebSockets as going away (1001).
process.on("ferryman:stopping", () => {
  for (const client of wss.clients) client.close(1001, "server stopping");
});
wss.on("connection", (ws) => {
  ws.send(String(process.pid));
  ws.on("message", (data, isBinary) => {
    const text = isBinary ? null : data.toString();
    if (text !== null && text.startsWith("close:")) ws.close(Number(text.slice(6)), "asked to");
    else ws.send(data, { binary: isBinary });
  });
});
