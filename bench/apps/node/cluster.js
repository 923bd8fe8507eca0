// Node.js on its own, with no app server: N workers of app.js under Node's cluster module.
"use strict";
const cluster = require("cluster");
const workers = Number(process.env.WORKERS || 2);
if (cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
} else {
  require("./app.js");
}
