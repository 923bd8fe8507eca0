// An Express fixture app (package.json "main"); its dependencies come from package-lock.json.
"use strict";
const express = require("express");

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

app.listen(3000, () => console.log("express listening"));
