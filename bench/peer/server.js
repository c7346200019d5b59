'use strict';
// bench/peer/server.js - Parse Server 9.x with its LiveQuery server attached to
// the same HTTP server, in this one Node process. Started by peer.sh (see
// README.md); configured from the environment:
//
//   PEER_PORT          HTTP + WebSocket port on 127.0.0.1 (REST at /parse, LiveQuery at /)
//   PEER_REDIS_URL     Redis URL the LiveQuery server subscribes to (bookstoreafterSave, ...)
//   PEER_DATABASE_URI  postgres://... database Parse Server uses for its schema
//
// Parse's own logging is at 'error' and goes to the console only (peer.sh sends
// stdout/stderr to WORKDIR/server.log); no log files are written.

const { ParseServer } = require('parse-server');

function need(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`server.js: ${name} is not set`);
    process.exit(2);
  }
  return v;
}

const port = Number(need('PEER_PORT'));
const redisURL = need('PEER_REDIS_URL');
const databaseURI = need('PEER_DATABASE_URI');

process.on('unhandledRejection', err => {
  console.error('server.js: unhandled rejection:', err);
  process.exit(1);
});

const options = {
  appId: 'bookstore',
  masterKey: 'benchMasterKey',
  databaseURI,
  serverURL: `http://127.0.0.1:${port}/parse`,
  mountPath: '/parse',
  host: '127.0.0.1',
  port,
  // Production-like, quiet logging: verbose/info/debug calls become no-ops
  // (LoggerController replaces them with () => {}), errors still reach the log.
  logLevel: 'error',
  logsFolder: null,
  // Publisher side (REST saves of these classes publish to Redis); the benchmark
  // injects on Redis directly, so it stays idle.
  liveQuery: { classNames: ['BookStockLog', 'SigningSchedule'], redisURL },
  // LiveQuery WebSocket server on the same HTTP server (no port => attached to it),
  // subscribing to Redis channels bookstoreafterSave / bookstoreafterDelete /
  // bookstoreclearCache. No keyPairs: {"op":"connect","applicationId":"bookstore"} is accepted.
  startLiveQueryServer: true,
  liveQueryServerOptions: { redisURL },
  // handleShutdown() (SIGTERM/SIGINT, registered by startApp) calls this when done.
  serverCloseComplete: () => process.exit(0),
};

ParseServer.startApp(options).then(
  server => {
    // Express 5's app.listen() calls back on 'error' too (e.g. EADDRINUSE), so
    // startApp resolves even when the port could not be bound: check it.
    if (!server.server || !server.server.listening) {
      console.error(`server.js: HTTP server is not listening on 127.0.0.1:${port} (port in use?)`);
      process.exit(1);
    }
    const lq = server.liveQueryServer;
    if (!lq || lq.server !== server.server) {
      console.error('server.js: LiveQuery server is not attached to the HTTP server');
      process.exit(1);
    }
    console.log(`server.js: ready pid=${process.pid} http://127.0.0.1:${port}/parse ws://127.0.0.1:${port}/`);
  },
  err => {
    console.error('server.js: startApp failed:', err);
    process.exit(1);
  }
);
