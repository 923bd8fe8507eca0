// Ferryman's Node.js loader: runs inside an app process, under the app's own node.
//
// It loads the app and makes the app's first `server.listen(...)` — whatever port
// or arguments it passes — listen on a Unix socket that Ferryman chose instead.
// Ferryman then speaks plain HTTP/1.1 to it, many requests at once (concurrency 0:
// unlimited). No npm dependencies: only Node's own modules (Node >= 18).
//
// Life of the process:
// * process.argv[2] is a JSON object: app root, startup file, socket path and the
//   handshake fd, on which the loader reports its journey as JSON lines, then
//   {"ready": ...} or {"error": ...}.
// * `cluster` is made inert: the app behaves as a worker and never forks, because
//   Ferryman does the multi-processing.
// * stdin is the owner pipe: at EOF the loader stops accepting, lets in-flight
//   requests finish, and exits; if Ferryman itself is gone it exits at once.
"use strict";

const fs = require("fs");
const net = require("net");
const path = require("path");
const cluster = require("cluster");
const { pathToFileURL } = require("url");

// The handshake's version (keep in step with ferryman/spawning/kinds.py).
const HANDSHAKE_VERSION = 1;
// While stopping: how often to check that Ferryman is still there to wait for us.
const CORE_CHECK_INTERVAL_MS = 200;

const args = JSON.parse(process.argv[2]);
const parentPid = process.ppid;
let handshakeFd = args.handshake_fd;

function send(message) {
  if (handshakeFd === null || handshakeFd === undefined) return;
  const data = Buffer.from(JSON.stringify(message) + "\n");
  let offset = 0;
  while (offset < data.length) {
    offset += fs.writeSync(handshakeFd, data, offset, data.length - offset);
  }
}

function step(name, state) {
  send({ step: name, state: state, at: Date.now() / 1000 });
}

function closeHandshake() {
  if (handshakeFd !== null && handshakeFd !== undefined) {
    try {
      fs.closeSync(handshakeFd);
    } catch (e) {
      // already closed
    }
    handshakeFd = null;
  }
}

function fail(stepName, kind, error) {
  const message =
    error && error.name && error.message !== undefined
      ? error.name + ": " + error.message
      : String(error);
  // The loader's own frames and Node's module machinery say nothing to the app's developer.
  const trace =
    error && error.stack
      ? String(error.stack)
          .split("\n")
          .filter((line) => !line.includes(__filename) && !line.includes("(node:internal/"))
          .join("\n")
      : "";
  process.stderr.write((trace || message) + "\n");
  send({ error: { step: stepName, kind: kind, message: message, traceback: trace } });
  closeHandshake();
  process.exitCode = 1;
  // Let stderr drain before exiting.
  setImmediate(() => process.exit(1));
}

// -- cluster: inert -------------------------------------------------------------------

// Apps written for `cluster` take the worker branch and listen; they never fork.
cluster.isPrimary = false;
cluster.isMaster = false;
cluster.isWorker = true;
cluster.fork = function fork() {
  throw new Error("cluster.fork() is disabled under Ferryman: Ferryman runs the processes");
};

// -- the first listen() goes to Ferryman's socket --------------------------------------------

const originalListen = net.Server.prototype.listen;
let server = null;

// With `cluster` inert, Node takes this process for a worker and would route every TCP
// listen() through the primary (cluster._getServer), which does not exist: a later
// listen() is made `exclusive`, which listens directly, as a primary's would.
function exclusiveListenArgs(listenArgs) {
  if (typeof net._normalizeArgs !== "function") return listenArgs;
  const [options, callback] = net._normalizeArgs(listenArgs);
  if (options === null || typeof options !== "object" || options._handle || options.handle) {
    return listenArgs; // a handle or file descriptor: as given
  }
  const exclusive = Object.assign({}, options, { exclusive: true });
  const first = listenArgs[0];
  if (typeof first !== "object" || first === null) {
    // listen(port, host, backlog, cb): the backlog is not part of the options.
    const backlog = Number(listenArgs[1]) || Number(listenArgs[2]);
    if (backlog) exclusive.backlog = backlog;
  }
  return callback ? [exclusive, callback] : [exclusive];
}

net.Server.prototype.listen = function listen(...listenArgs) {
  if (server !== null) {
    // Only the first server is Ferryman's; others (e.g. a metrics port) listen as asked.
    return originalListen.apply(this, exclusiveListenArgs(listenArgs));
  }
  server = this;
  step("listen", "in_progress");
  // Ferryman keeps connections to the app open and reuses them; the app must not
  // time them out from under it (Ferryman applies the client-facing timeouts).
  if ("keepAliveTimeout" in this) this.keepAliveTimeout = 0;
  if ("requestTimeout" in this) this.requestTimeout = 0;
  if ("headersTimeout" in this) this.headersTimeout = 0;
  const callback = listenArgs.find((a) => typeof a === "function");
  if (callback) this.once("listening", callback);
  this.once("listening", ready);
  this.once("error", (error) => fail("listen", "listen_failed", error));
  // exclusive: bypass cluster's handle sharing, which needs a primary process.
  return originalListen.call(this, { path: args.socket, exclusive: true });
};

function ready() {
  // The handlers first (unless the app has its own): a SIGTERM that comes as soon as the
  // core hears "ready" is an orderly stop. Installed after the message, a SIGTERM sent at
  // once (systemd's control-group kill right after a spawn) found Node's default action:
  // killed by signal 15, logged as a crash right after starting.
  if (process.listenerCount("SIGTERM") === 0) process.on("SIGTERM", onSigterm);
  if (process.listenerCount("SIGQUIT") === 0) process.on("SIGQUIT", reportHang);
  step("listen", "performed");
  step("ready", "performed");
  send({
    ready: {
      version: HANDSHAKE_VERSION,
      socket: args.socket,
      protocol: "http",
      concurrency: 0,
      pid: process.pid,
    },
  });
  closeHandshake();
}

// -- a hung process (--max-request-time): what it was doing, before Ferryman kills it ---------

// JavaScript cannot show the stack of a request that waits (its callbacks are not on any
// stack): the loader lists the requests in flight and what the event loop waits on. Costs
// nothing per request: it reads Node's own lists when asked. If the event loop is blocked
// (a busy loop), this never runs; the log then shows the core's line alone.
function reportHang() {
  const lines = ["Ferryman loader: asked what this process is doing (max_request_time):"];
  const handles = typeof process._getActiveHandles === "function" ? process._getActiveHandles() : [];
  for (const handle of handles) {
    const response = handle && handle._httpMessage;
    const request = response && response.req;
    if (request && !response.writableEnded) {
      lines.push("  request in flight: " + request.method + " " + String(request.url).slice(0, 200));
    }
  }
  if (typeof process.getActiveResourcesInfo === "function") {
    const counts = new Map();
    for (const name of process.getActiveResourcesInfo()) counts.set(name, (counts.get(name) || 0) + 1);
    const waits = [...counts].map(([name, count]) => name + " x" + count).join(", ");
    lines.push("  the event loop waits on: " + (waits || "nothing"));
  }
  lines.push("  (Node.js has no stack for a waiting request: look for the await, timer or");
  lines.push("  callback of these routes that never completes)");
  process.stderr.write(lines.join("\n") + "\n");
}

// -- graceful exit when the owner pipe closes ---------------------------------------------

function coreAlive() {
  return process.ppid === parentPid;
}

let stopping = false;

function stop() {
  stopping = true;
  if (server === null || !coreAlive()) {
    process.exit(0);
  }
  server.close(() => process.exit(0));
  if (typeof server.closeIdleConnections === "function") server.closeIdleConnections();
  // Ferryman sends SIGTERM, then SIGKILL, if requests never finish; but if Ferryman
  // itself dies meanwhile, nobody would: check for that.
  setInterval(() => {
    if (!coreAlive()) process.exit(0);
  }, CORE_CHECK_INTERVAL_MS).unref();
}

// "g" on the owner pipe: the server is stopping. The app may close what would hold the
// stop (WebSockets: server.close() leaves upgraded sockets open) by listening:
//   process.on("ferryman:stopping", () => wss.clients.forEach((c) => c.close(1001)));
let stoppingSaid = false;
process.stdin.on("data", (data) => {
  if (!stoppingSaid && data.includes(0x67)) {
    stoppingSaid = true;
    process.emit("ferryman:stopping");
  }
});
process.stdin.on("end", stop);
process.stdin.on("error", stop);

// SIGTERM (systemd's control-group kill, docker stop) is the same orderly stop, unless the
// app handles SIGTERM itself; one that comes while stopping already ends the process.
function onSigterm() {
  if (stopping) {
    process.exit(128 + 15);
  }
  process.stderr.write("Ferryman loader: received SIGTERM; finishing the requests in flight\n");
  stop();
}

// -- load the app -------------------------------------------------------------------------------

async function main() {
  send({
    step: "loader_start",
    state: "performed",
    at: Date.now() / 1000,
    interpreter: "node " + process.version + " (" + process.execPath + ")",
  });
  process.chdir(args.app_root);
  const file = path.resolve(args.app_root, args.startup_file);
  if (!fs.existsSync(file)) {
    fail("load_app", "startup_file_missing", new Error("startup file " + file + " does not exist"));
    return;
  }
  process.title = "Ferryman Node: " + args.app_root;
  step("load_app", "in_progress");
  try {
    try {
      require(file);
    } catch (error) {
      if (error && error.code === "ERR_REQUIRE_ESM") {
        await import(pathToFileURL(file).href);
      } else {
        throw error;
      }
    }
  } catch (error) {
    const kind = error instanceof SyntaxError ? "syntax_error" : "import_error";
    fail("load_app", kind, error);
    return;
  }
  step("load_app", "performed");
  // The app now has until start_timeout to call listen(); Ferryman waits for "ready".
}

main().catch((error) => fail("load_app", "import_error", error));
