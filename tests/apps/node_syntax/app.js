// A Node.js app with a syntax error.
console.log("never printed");
function broken( {
