// One listening port per process for every protocol thaw speaks: gRPC and Connect over h2c,
// Connect, gRPC-Web and plain REST over HTTP/1.1. The first bytes of a connection tell them apart
// (an HTTP/2 connection opens with the "PRI * HTTP/2.0" preface).
//
// Every connection is bounded (connection-limits.ts): it must send a request promptly, send the
// whole of it in time, and not sit idle without one; the listener takes at most maxConnections at
// once. A request in flight is never cut by these bounds, however long its response streams.
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { Duplex } from "node:stream";
import { setMaxListeners } from "node:events";
import { Code, ConnectError, type ConnectRouter, type Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { ConnectionGuard } from "./connection-guard.js";
import { HTTP2_SESSION_OPTIONS } from "./clients.js";
import { connectionLimits, type ConnectionLimits } from "./connection-limits.js";

/** Handles a request no RPC route matched (the edge's REST endpoints); the default answers 404. */
export type FallbackHandler = (
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
) => void;

export interface ServerOptions {
  /** Registers the process's services (each process has a routes.ts). */
  routes: (router: ConnectRouter) => void;
  /** Interface to bind; loopback unless told otherwise. */
  host?: string;
  /** Port; 0 picks a free one. */
  port?: number;
  /** Cross-cutting concerns: auth, request ids, metrics. */
  interceptors?: Interceptor[];
  /** REST and anything else that is not an RPC. */
  fallback?: FallbackHandler;
  /** Timeouts and the connection cap; fields left out take the defaults of connection-limits.ts. */
  limits?: Partial<ConnectionLimits>;
}

export interface RunningServer {
  /** Base URL, e.g. "http://127.0.0.1:50051". */
  readonly url: string;
  readonly port: number;
  readonly host: string;
  readonly limits: ConnectionLimits;
  /** Connections open now. */
  connections(): number;
  /**
   * Stops accepting connections and lets the open ones finish what they are doing: each closes as
   * soon as it has no request in flight (HTTP/2 sessions get a GOAWAY; HTTP/1.1 responses say
   * "connection: close"). Resolves once every connection closed, or after `graceMs`.
   */
  drain(graceMs: number): Promise<void>;
  /** Stops accepting, aborts running calls with UNAVAILABLE, and closes every connection. */
  close(): Promise<void>;
}

const PREFACE = Buffer.from("PRI * HTTP/2.0");
/** How long close() lets aborted calls send their UNAVAILABLE status before cutting connections. */
const CLOSE_GRACE_MS = 1000;
const BAD_REQUEST = "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
/** What running calls are aborted with when the server closes. */
const SHUTTING_DOWN = new ConnectError("the server is shutting down", Code.Unavailable);

export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const limits = connectionLimits(options.limits);
  const shutdown = new AbortController();
  setMaxListeners(0, shutdown.signal); // every running call listens for shutdown
  const handler = connectNodeAdapter({
    routes: options.routes,
    interceptors: options.interceptors,
    fallback: options.fallback as Parameters<typeof connectNodeAdapter>[0]["fallback"],
    shutdownSignal: shutdown.signal,
  });

  // Open connections and the guard bounding each one's idleness.
  const connections = new Map<net.Socket, ConnectionGuard>();
  const sessions = new Set<http2.ServerHttp2Session>();
  const whenAllClosed = new Set<() => void>();

  const h1 = http.createServer({
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    connectionsCheckingInterval: Math.max(10, Math.min(1000, Math.floor(limits.headersTimeoutMs / 4))),
  });
  h1.keepAliveTimeout = limits.idleTimeoutMs;
  // Node checks header and request timeouts only on servers that emitted "listening"; this one
  // never listens itself (connections are handed to it), so it is told to start checking.
  h1.emit("listening");
  h1.on("request", (req: http.IncomingMessage, res: http.ServerResponse) => {
    const guard = connections.get(req.socket);
    if (guard === undefined) return;
    guard.begin();
    if (guard.ending) res.setHeader("connection", "close");
    res.once("close", () => guard.end());
  });
  h1.on("request", handler);

  const h2 = http2.createServer({ ...HTTP2_SESSION_OPTIONS }, handler);
  // The guard of the connection being handed to h2: its "session" event fires synchronously inside emit("connection").
  let handingOver: { guard: ConnectionGuard; setClose: (close: () => void) => void } | undefined;
  h2.on("session", (session) => {
    const { guard, setClose } = handingOver!;
    setClose(() => session.close());
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    session.on("stream", (stream: http2.ServerHttp2Stream) => {
      guard.begin();
      stream.once("close", () => guard.end());
      if (!stream.endAfterHeaders) requestDeadline(stream, limits.requestTimeoutMs);
    });
  });

  const listener = net.createServer((socket) => {
    socket.setNoDelay(true); // small frames (headers, tokens) must not wait for Nagle
    let closeConnection: () => void = () => endSocket(socket);
    const guard = new ConnectionGuard(() => closeConnection(), limits.headersTimeoutMs, limits.idleTimeoutMs);
    connections.set(socket, guard);
    socket.once("close", () => {
      guard.dispose();
      connections.delete(socket);
      if (connections.size === 0) for (const resolve of whenAllClosed) resolve();
    });
    dispatch(socket, {
      h1: () => {
        guard.firstRequestTimedByProtocol();
        h1.emit("connection", socket);
      },
      h2: (stream) => {
        handingOver = { guard, setClose: (close) => (closeConnection = close) };
        try {
          h2.emit("connection", stream);
        } finally {
          handingOver = undefined;
        }
      },
    });
  });
  listener.maxConnections = limits.maxConnections; // beyond: closed as accepted
  const host = options.host ?? "127.0.0.1";
  await new Promise<void>((resolve, reject) => {
    listener.once("error", reject);
    // A deep accept queue: thousands of clients may connect at once (Node's default is 511).
    listener.listen({ port: options.port ?? 0, host, backlog: 4096 }, () => {
      listener.off("error", reject);
      resolve();
    });
  });
  const port = (listener.address() as net.AddressInfo).port;
  const urlHost = host.includes(":") ? `[${host}]` : host === "0.0.0.0" ? "127.0.0.1" : host;

  let listenerClosed: Promise<void> | undefined;
  const stopAccepting = () => {
    listenerClosed ??= new Promise<void>((resolve) => listener.close(() => resolve()));
    h1.close(); // stops its timeout checks
  };
  /** Resolves when no connection is open, or after `ms`. */
  const allClosed = (ms: number) =>
    new Promise<void>((resolve) => {
      if (connections.size === 0) return resolve();
      const done = () => {
        clearTimeout(timer);
        whenAllClosed.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      whenAllClosed.add(done);
    });
  const drainAll = () => {
    // HTTP/2 sessions are told at once (GOAWAY: running streams finish, no new ones start);
    // HTTP/1.1 connections close after their current response, which says "connection: close".
    for (const session of sessions) session.close();
    for (const guard of [...connections.values()]) guard.drain();
  };

  let closing: Promise<void> | undefined;
  return {
    url: `http://${urlHost}:${port}`,
    port,
    host,
    limits,
    connections: () => connections.size,
    async drain(graceMs: number) {
      stopAccepting();
      drainAll();
      await allClosed(graceMs);
    },
    close() {
      closing ??= (async () => {
        stopAccepting();
        shutdown.abort(SHUTTING_DOWN);
        drainAll();
        // Aborted calls end with their UNAVAILABLE status and their connections close; what is still open after that is cut.
        await allClosed(CLOSE_GRACE_MS);
        for (const socket of connections.keys()) socket.destroy();
        await listenerClosed;
      })();
      return closing;
    },
  };
}

/** Ends a socket after what was written to it has left, and destroys it then (or after a while, should it never leave). */
function endSocket(socket: net.Socket): void {
  socket.end();
  socket.once("finish", () => socket.destroy());
  socket.setTimeout(CLOSE_GRACE_MS, () => socket.destroy());
}

/** An HTTP/2 stream whose request (headers and body) has not all arrived after `ms` is reset. */
function requestDeadline(stream: http2.ServerHttp2Stream, ms: number): void {
  const timer = setTimeout(() => {
    if (stream.destroyed || stream.state.remoteClose) return; // the whole request arrived; its response may take as long as it likes
    stream.close(http2.constants.NGHTTP2_CANCEL);
  }, ms);
  timer.unref();
  stream.once("close", () => clearTimeout(timer));
}

/** A character that may start an HTTP/1.1 request line (a method is a token: RFC 9110 tchar). */
function isTokenChar(byte: number): boolean {
  return (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a) || (byte >= 0x30 && byte <= 0x39) || "!#$%&'*+-.^_`|~".includes(String.fromCharCode(byte));
}

/**
 * Reads just enough of a new connection to know its protocol, then hands it over. A connection
 * that cannot be the start of either (a bare "\r\n\r\n", binary noise) is answered 400 at once.
 */
function dispatch(socket: net.Socket, to: { h1: () => void; h2: (stream: Duplex) => void }): void {
  let seen = Buffer.alloc(0);
  const onData = (chunk: Buffer): void => {
    seen = Buffer.concat([seen, chunk]);
    const n = Math.min(seen.length, PREFACE.length);
    const isH2 = seen.subarray(0, n).equals(PREFACE.subarray(0, n));
    if (isH2 && seen.length < PREFACE.length) return; // could still be either; wait for more
    socket.off("data", onData);
    socket.pause();
    if (isH2) {
      // http2 reads from the socket's native handle and would miss bytes already taken off it,
      // so it gets a stream that replays them first.
      to.h2(replaying(seen, socket));
    } else if (!isTokenChar(seen[0])) {
      socket.end(BAD_REQUEST);
      socket.resume(); // read on to the client's close
    } else {
      socket.unshift(seen);
      to.h1();
      socket.resume();
    }
  };
  socket.on("data", onData);
  socket.on("error", () => socket.destroy());
}

/** A duplex that yields `head` and then whatever `socket` receives, and writes to `socket`. */
function replaying(head: Buffer, socket: net.Socket): Duplex {
  const duplex = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk, _encoding, callback) {
      // Accept the next write at once unless the kernel buffer is full (waiting for each flush
      // would serialise HTTP/2's many small frames).
      if (socket.write(chunk)) callback();
      else socket.once("drain", () => callback());
    },
    final(callback) {
      socket.end(callback);
    },
    destroy(err, callback) {
      socket.destroy(err ?? undefined);
      callback(err);
    },
  });
  duplex.push(head);
  socket.on("data", (data) => {
    if (!duplex.push(data)) socket.pause();
  });
  socket.on("end", () => duplex.push(null));
  socket.on("close", () => duplex.destroy());
  socket.on("error", (err) => duplex.destroy(err));
  return duplex;
}
