// HTTP/2 sessions between thaw's processes (src/shared/clients.ts and the server's side): a request
// of tens of MB does not make Node refuse the requests beside it on the same session. In a file of
// its own: moving 30 MB keeps the event loop busy, which timing-bound tests beside it would feel.
import test from "ava";
import { create } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import { ConverterService, ListCheckpointsResponseSchema } from "../../src/gen/thaw/converter/v1/converter_service_pb.js";
import { grpcClient } from "../../src/shared/clients.js";
import { startServer } from "../../src/shared/server.js";

test("a request of tens of MB does not fail the requests beside it on the same HTTP/2 session", async (t) => {
  // ConvertRequest.source stands in for a large prompt (the edge lets 32 MB through).
  const server = await startServer({
    routes: (router: ConnectRouter) =>
      router.service(ConverterService, {
        listCheckpoints: () => create(ListCheckpointsResponseSchema, { checkpoints: [] }),
        async *convert(req) {
          yield { filesDone: req.source.length };
        },
      }),
  });
  t.teardown(() => server.close());
  const client = grpcClient(ConverterService, server.url);
  const large = (async () => {
    for await (const p of client.convert({ source: "x".repeat(30 << 20) })) return p.filesDone;
  })();
  const beside = Promise.all(Array.from({ length: 4 }, () => client.listCheckpoints({})));
  t.is(await large, 30 << 20);
  t.is((await beside).length, 4);
});
