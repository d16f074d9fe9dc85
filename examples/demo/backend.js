// A demo backend: `node backend.js <host> <port> <name>`; answers every connection with its name.
'use strict';
const net = require('node:net');

const [host, port, name] = process.argv.slice(2);
net
  .createServer((socket) => {
    socket.on('error', () => socket.destroy());
    socket.end(`${name}\n`);
  })
  .listen(Number(port), host);
