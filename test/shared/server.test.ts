import test from "ava";
import http from "node:http";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import {
  ConverterService,
  ListCheckpointsResponseSchema,
} from "../../src/gen/thaw/converter/v1/converter_service_pb.js";
import { startServer } from "../../src/shared/server.js";
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
  t.true([Code.Unavailable, Code.Canceled, Code.Internal].includes((err as ConnectError).code));
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
