// A Node.js app that throws while it is required.
console.log("node app: about to throw");
throw new Error("cannot connect to the message queue");
