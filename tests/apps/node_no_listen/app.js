// A Node.js app that loads fine but never calls listen().
console.log("node app: loaded, but I forgot to listen");
setInterval(() => {}, 1000);
