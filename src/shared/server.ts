// One listening port per process for every protocol thaw speaks: gRPC and Connect over h2c,
// Connect, gRPC-Web and plain REST over HTTP/1.1. The first bytes of a connection tell them apart
// (an HTTP/2 connection opens with the "PRI * HTTP/2.0" preface).
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { Duplex } from "node:stream";
import { setMaxListeners } from "node:events";
import type { ConnectRouter, Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";

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
  /** Longest a request may run, in milliseconds (0: unlimited; streams of tokens can be long). */
  requestTimeoutMs?: number;
}

export interface RunningServer {
  /** Base URL, e.g. "http://127.0.0.1:50051". */
  readonly url: string;
  readonly port: number;
  readonly host: string;
  /** Stops accepting, aborts running calls with UNAVAILABLE, and closes every connection. */
  close(): Promise<void>;
}

const PREFACE = Buffer.from("PRI * HTTP/2.0");

export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const shutdown = new AbortController();
  setMaxListeners(0, shutdown.signal); // every running call listens for shutdown
  const handler = connectNodeAdapter({
    routes: options.routes,
    interceptors: options.interceptors,
    fallback: options.fallback as Parameters<typeof connectNodeAdapter>[0]["fallback"],
    shutdownSignal: shutdown.signal,
  });
  const h1 = http.createServer(handler);
  h1.requestTimeout = options.requestTimeoutMs ?? 0;
  const h2 = http2.createServer({}, handler);
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();
  h2.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });

  const listener = net.createServer((socket) => {
    socket.setNoDelay(true); // small frames (headers, tokens) must not wait for Nagle
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    dispatch(socket, h1, h2);
  });
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

  let closing: Promise<void> | undefined;
  return {
    url: `http://${urlHost}:${port}`,
    port,
    host,
    close() {
      closing ??= (async () => {
        shutdown.abort();
        const closed = new Promise<void>((resolve) => listener.close(() => resolve()));
        for (const session of sessions) session.close();
        h1.closeIdleConnections();
        // Give streams a moment to end with their UNAVAILABLE status, then cut what is left.
        await new Promise((r) => setTimeout(r, 50));
        for (const session of sessions) session.destroy();
        for (const socket of sockets) socket.destroy();
        await closed;
      })();
      return closing;
    },
  };
}

/** Reads just enough of a new connection to know its protocol, then hands it over. */
function dispatch(socket: net.Socket, h1: http.Server, h2: http2.Http2Server): void {
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
      h2.emit("connection", replaying(seen, socket));
    } else {
      socket.unshift(seen);
      h1.emit("connection", socket);
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
