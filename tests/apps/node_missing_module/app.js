// A Node.js app that needs a package nobody installed: Node's message spans lines.
"use strict";
require("no-such-package-anywhere");
