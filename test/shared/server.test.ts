import test from "ava";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { once } from "node:events";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import {
  ConverterService,
  ListCheckpointsResponseSchema,
} from "../../src/gen/thaw/converter/v1/converter_service_pb.js";
import { startServer } from "../../src/shared/server.js";
import { defaultMaxConnections } from "../../src/shared/connection-limits.js";
import { requireToken } from "../../src/shared/auth.js";
import { grpcClient } from "../../src/shared/clients.js";

// A minimal service behind the server: the server, not the service, is under test here.
const routes = (router: import("@connectrpc/connect").ConnectRouter) =>
  router.service(ConverterService, {
    listCheckpoints: () => create(ListCheckpointsResponseSchema, { checkpoints: [] }),
    async *readChunk(_req, ctx) {
      for (let i = 0; ; i++) {
        yield { offset: BigInt(i), data: new Uint8Array(1) };
        await new Promise((r) => setTimeout(r, 5));
        ctx.signal.throwIfAborted();
      }
    },
  });

test("one port serves gRPC over h2c, Connect over HTTP/1.1, and REST fallback", async (t) => {
  const server = await startServer({
    routes,
    fallback: (_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end('{"status":"ok"}');
    },
  });
  t.teardown(() => server.close());

  const grpc = createClient(ConverterService, createGrpcTransport({ baseUrl: server.url }));
  t.deepEqual((await grpc.listCheckpoints({})).checkpoints, []);

  const connect = createClient(ConverterService, createConnectTransport({ baseUrl: server.url, httpVersion: "1.1" }));
  t.deepEqual((await connect.listCheckpoints({})).checkpoints, []);

  const body = await new Promise<string>((resolve, reject) => {
    http.get(`${server.url}/health`, (res) => {
      let text = "";
      res.on("data", (c) => (text += c));
      res.on("end", () => resolve(text));
    }).on("error", reject);
  });
  t.is(body, '{"status":"ok"}');
});

test("close ends running streams with UNAVAILABLE", async (t) => {
  const server = await startServer({ routes });
  const client = createClient(ConverterService, createGrpcTransport({ baseUrl: server.url }));
  const stream = client.readChunk({});
  let received = 0;
  const reading = (async () => {
    for await (const _ of stream) {
      received++;
      if (received === 3) void server.close();
    }
  })();
  const err = await t.throwsAsync(reading);
  t.true(err instanceof ConnectError);
  t.is((err as ConnectError).code, Code.Unavailable);
  t.true(received >= 3);
});

test("a configured internal token is required", async (t) => {
  const server = await startServer({ routes, interceptors: [requireToken("s3cret")] });
  t.teardown(() => server.close());
  const anonymous = grpcClient(ConverterService, server.url);
  const err = await t.throwsAsync(anonymous.listCheckpoints({}));
  t.is((err as ConnectError).code, Code.Unauthenticated);
  const wrong = grpcClient(ConverterService, server.url, { token: "guess" });
  t.is(((await t.throwsAsync(wrong.listCheckpoints({}))) as ConnectError).code, Code.Unauthenticated);
  const right = grpcClient(ConverterService, server.url.replace("http://", ""), { token: "s3cret" });
  t.deepEqual((await right.listCheckpoints({})).checkpoints, []);
});

// ─── bounded connections: real sockets, small limits set through options ─────────────────────────

/** A raw TCP connection that records what the server sends and when it closes. */
function rawConnection(url: string): { socket: net.Socket; received: () => string; closed: Promise<void> } {
  const { hostname, port } = new URL(url);
  const socket = net.connect(Number(port), hostname);
  let text = "";
  socket.setEncoding("latin1");
  socket.on("data", (d: string) => (text += d));
  socket.on("error", () => {});
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  return { socket, received: () => text, closed };
}

// Short enough to keep the tests quick, long enough that a loaded 2-core machine (CI runs many test
// files at once) still sends a test's own request in time.
const quick = { headersTimeoutMs: 600, requestTimeoutMs: 1200, idleTimeoutMs: 800 };
const patient = { headersTimeoutMs: 60_000, requestTimeoutMs: 60_000, idleTimeoutMs: 60_000 };

async function bounded(t: import("ava").ExecutionContext, limits: Parameters<typeof startServer>[0]["limits"], fallback?: Parameters<typeof startServer>[0]["fallback"]) {
  const server = await startServer({ routes, limits, fallback });
  t.teardown(() => server.close());
  return server;
}

test("a connection that sends nothing is closed after the headers timeout", async (t) => {
  const server = await bounded(t, quick);
  const c = rawConnection(server.url);
  await c.closed;
  t.is(c.received(), "");
  while (server.connections() > 0) await new Promise((r) => setImmediate(r)); // the server's side of the close
  t.pass();
});

test("partial headers: 408 after the headers timeout; a slowloris trickle of header lines is cut the same way", async (t) => {
  const server = await bounded(t, quick);
  const partial = rawConnection(server.url);
  partial.socket.write("GET /health HTTP/1.1\r\nHost: x\r\n");
  await partial.closed;
  t.regex(partial.received(), /^HTTP\/1\.1 408 /);

  const slow = rawConnection(server.url);
  slow.socket.write("GET /health HTTP/1.1\r\nHost: x\r\n");
  let lines = 0;
  const trickle = setInterval(() => {
    if (!slow.socket.destroyed) slow.socket.write(`X-Slow-${lines++}: y\r\n`);
  }, 10);
  await slow.closed;
  clearInterval(trickle);
  t.regex(slow.received(), /^HTTP\/1\.1 408 /);
  t.true(lines < 1000, `${lines} header lines before the cut`);
});

test("a request body that trickles is cut after the request timeout with 408", async (t) => {
  const server = await bounded(t, quick);
  const c = rawConnection(server.url);
  c.socket.write("POST /thaw.converter.v1.ConverterService/ListCheckpoints HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{");
  const trickle = setInterval(() => {
    if (!c.socket.destroyed) c.socket.write(" ");
  }, 10);
  await c.closed;
  clearInterval(trickle);
  t.regex(c.received(), /^HTTP\/1\.1 408 /);
});

test("a bare CRLF, binary noise or a malformed request line gets a 400 at once", async (t) => {
  const server = await bounded(t, patient); // no timeout could be what ends these connections
  for (const garbage of ["\r\n\r\n", "\r\n", "\x16\x03\x01\x02\x00", "HELLO WORLD\r\n\r\n", "GET /health HTTP/1.1 extra\r\nHost: x\r\n\r\n", "GET /he alth HTTP/1.1\r\n\r\n"]) {
    const c = rawConnection(server.url);
    c.socket.write(garbage);
    const status = await new Promise<string>((resolve) => c.socket.once("data", (d) => resolve(String(d))));
    t.regex(status, /^HTTP\/1\.1 400 /, JSON.stringify(garbage));
    await c.closed;
  }
});

test("an idle keep-alive connection is closed after the idle timeout; the request before it was served", async (t) => {
  const server = await bounded(t, quick, (_req, res) => {
    res.writeHead(200, { "content-length": "2" });
    res.end("ok");
  });
  const c = rawConnection(server.url);
  c.socket.write("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  await c.closed;
  t.regex(c.received(), /^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nok$/);
});

test("HTTP/2: a session that never opens a stream, a half preface, and a stream whose request never ends are closed", async (t) => {
  const server = await bounded(t, quick);
  const session = http2.connect(server.url);
  session.on("error", () => {});
  await new Promise<void>((resolve) => session.once("close", () => resolve()));
  t.pass("the idle session was closed by the server");

  const half = rawConnection(server.url);
  half.socket.write("PRI * HTTP/2.0\r\n");
  await half.closed;
  t.false(half.received().includes("HTTP/1.1"), "closed as HTTP/2 (the server's SETTINGS at most), never answered as HTTP/1.1");

  const open = http2.connect(server.url);
  open.on("error", () => {});
  t.teardown(() => open.destroy());
  const stream = open.request({ ":method": "POST", ":path": "/thaw.converter.v1.ConverterService/ListCheckpoints", "content-type": "application/proto" }, { endStream: false });
  stream.on("error", () => {});
  stream.resume();
  await new Promise<void>((resolve) => stream.once("close", () => resolve()));
  t.is(stream.rstCode, http2.constants.NGHTTP2_CANCEL);
});

test("the connection cap: one connection more than maxConnections is closed as it is accepted", async (t) => {
  const server = await bounded(t, { ...patient, maxConnections: 2 }, (_req, res) => {
    (res as http.ServerResponse).writeHead(200, { "content-length": "2", connection: "close" });
    (res as http.ServerResponse).end("ok");
  });
  t.is(server.limits.maxConnections, 2);
  const first = rawConnection(server.url);
  const second = rawConnection(server.url);
  await Promise.all([once(first.socket, "connect"), once(second.socket, "connect")]);
  while (server.connections() < 2) await new Promise((r) => setImmediate(r)); // the server's side of the accepts
  const third = rawConnection(server.url);
  third.socket.write("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  await third.closed;
  t.is(third.received(), "", "refused without an answer");
  first.socket.destroy();
  await first.closed;
  while (server.connections() > 1) await new Promise((r) => setImmediate(r));
  const fourth = rawConnection(server.url);
  fourth.socket.write("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  await fourth.closed;
  t.regex(fourth.received(), /^HTTP\/1\.1 200 /);
  second.socket.destroy();
});

test("streams that run longer than every timeout are not cut, flowing or silent (gRPC over h2c and SSE over HTTP/1.1)", async (t) => {
  const limits = { headersTimeoutMs: 300, requestTimeoutMs: 500, idleTimeoutMs: 500 };
  const server = await bounded(t, limits, (_req, response) => {
    // an event stream silent for longer than the idle timeout (a model loading), then flowing
    const res = response as http.ServerResponse;
    res.writeHead(200, { "content-type": "text/event-stream" });
    let n = 0;
    const send = () => {
      res.write(`data: ${n}\n\n`);
      if (++n === 10) res.end("data: [DONE]\n\n");
      else setTimeout(send, 20);
    };
    setTimeout(send, 3 * limits.idleTimeoutMs);
  });
  const grpc = createClient(ConverterService, createGrpcTransport({ baseUrl: server.url }));
  let received = 0;
  for await (const _ of grpc.readChunk({})) if (++received === 240) break; // 5 ms apart: > 2 × every timeout
  t.is(received, 240);

  const body = await new Promise<string>((resolve, reject) => {
    http.get(`${server.url}/events`, (res) => {
      let text = "";
      res.on("data", (c) => (text += c));
      res.on("end", () => resolve(text));
    }).on("error", reject);
  });
  t.true(body.endsWith("data: 9\n\ndata: [DONE]\n\n"), body);
});

test("drain lets a running stream finish, closes idle connections at once, then resolves", async (t) => {
  let finish!: () => void;
  const server = await startServer({
    routes,
    fallback: (req, response) => {
      const res = response as http.ServerResponse;
      if (req.url === "/wait") {
        res.writeHead(200, { "content-type": "text/event-stream" });
        res.write("data: started\n\n");
        finish = () => res.end("data: [DONE]\n\n");
      } else res.end("ok");
    },
  });
  t.teardown(() => server.close());
  const idle = rawConnection(server.url);
  idle.socket.write("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  await once(idle.socket, "data");
  const busy = rawConnection(server.url);
  busy.socket.write("GET /wait HTTP/1.1\r\nHost: x\r\n\r\n");
  await once(busy.socket, "data");
  const drained = server.drain(60_000);
  await idle.closed;
  t.false(busy.socket.destroyed, "the running stream goes on");
  finish();
  await drained;
  await busy.closed;
  t.true(busy.received().includes("data: [DONE]\n\n"));
  t.is(server.connections(), 0);
});

test("limits are checked: positive integers, headers within the request timeout", async (t) => {
  await t.throwsAsync(startServer({ routes, limits: { idleTimeoutMs: 0 } }), { instanceOf: RangeError, message: /idleTimeoutMs must be a positive integer/ });
  await t.throwsAsync(startServer({ routes, limits: { headersTimeoutMs: 5000, requestTimeoutMs: 1000 } }), { instanceOf: RangeError, message: /must not exceed requestTimeoutMs/ });
  t.true(defaultMaxConnections() >= 16 && defaultMaxConnections() <= 4096);
});
