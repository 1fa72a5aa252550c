// SIGTERM of a real `thaw orchestrator` process: running requests get the grace period to finish;
// what still runs then ends cleanly — an event stream with a `data: {"error": …}` event and
// `data: [DONE]`, a plain request with a 503, a gRPC stream with UNAVAILABLE — never a bare end
// of stream. The agent behind it is a TestAgent in this process, streaming a token every 20 ms.
import test from "ava";
import { spawn } from "node:child_process";
import { once } from "node:events";
import path from "node:path";
import { createInterface } from "node:readline";
import { Code, ConnectError } from "@connectrpc/connect";
import { ThawClient } from "../../src/client/thaw-client.js";
import { Tier } from "../../src/gen/thaw/agent/v1/agent_pb.js";
import { TestAgent } from "../orchestrator/test-agent.js";
import { tempDirs } from "../fixtures/temp-dir.js";

const dirs = tempDirs("thaw-shutdown-");
test.after.always(() => dirs.cleanup());

/** Reads an event stream until `until` holds for what arrived (or the stream ends); returns the text so far. */
async function readUntil(reader: ReadableStreamDefaultReader<Uint8Array>, text: string, until: (text: string) => boolean): Promise<string> {
  const decoder = new TextDecoder();
  while (!until(text)) {
    const r = await reader.read();
    if (r.done) break;
    text += decoder.decode(r.value, { stream: true });
  }
  return text;
}

test("SIGTERM: streams finishing within the grace end normally; the rest end with an error event and [DONE], a 503, UNAVAILABLE", async (t) => {
  const orchestrator = spawn(
    process.execPath,
    [path.resolve("src/cli/thaw.js"), "orchestrator", "--port", "0", "--state-dir", await dirs.make(), "--model", "m", "--heartbeat-interval", "100", "--shutdown-grace", "1500"],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  t.teardown(() => orchestrator.kill("SIGKILL"));
  const log: string[] = [];
  let url = "";
  for await (const line of createInterface({ input: orchestrator.stderr! })) {
    log.push(line);
    const m = /serving on (http:\/\/\S+)/.exec(line);
    if (m) {
      url = m[1];
      break;
    }
  }
  t.truthy(url, log.join("\n"));
  const exited = once(orchestrator, "exit");
  let allArrived!: () => void;
  const fourInfers = new Promise<void>((resolve) => (allArrived = resolve));
  let infers = 0;
  const agent = await TestAgent.start({
    id: "a",
    models: { m: Tier.GPU },
    scheduler: url,
    heartbeatMs: 50,
    tokenDelayMs: 20,
    reply: ["x"],
    onInfer: () => void (++infers === 4 && allArrived()),
  });
  t.teardown(() => agent.close());

  const post = (body: object) =>
    fetch(`${url}/v1/chat/completions`, { method: "POST", body: JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }], ...body }) });
  const long = (await post({ stream: true, max_tokens: 100_000 })).body!.getReader();
  const short = (await post({ stream: true, max_tokens: 10 })).body!.getReader();
  const plain = post({ max_tokens: 100_000 });
  const grpc = (async () => {
    let n = 0;
    for await (const _ of new ThawClient(url).chat("m", [{ role: "user", content: "hi" }], { maxTokens: 100_000 })) n++;
    return n;
  })();
  const first = (text: string) => text.includes('"content":"x"');
  let longText = await readUntil(long, "", first);
  let shortText = await readUntil(short, "", first);
  await fourInfers; // all four are generating

  orchestrator.kill("SIGTERM");
  shortText = await readUntil(short, shortText, () => false);
  longText = await readUntil(long, longText, () => false);

  // Finished within the grace: every token, a finish reason, [DONE], no error.
  const shortEvents = shortText.split("\n\n").filter((e) => e !== "");
  t.is(shortEvents.at(-1), "data: [DONE]");
  t.regex(shortEvents.at(-2)!, /"finish_reason":"length"/);
  t.false(shortText.includes('"error"'));

  // Still running when the grace ran out: an in-band error, then [DONE].
  const longEvents = longText.split("\n\n").filter((e) => e !== "");
  t.is(longEvents.at(-1), "data: [DONE]");
  const error = JSON.parse(longEvents.at(-2)!.slice("data: ".length)).error;
  t.is(error.type, "server_error");
  t.is(error.code, "service_unavailable");
  t.regex(error.message, /shutting down/);

  const answered = await plain;
  t.is(answered.status, 503);
  t.is(((await answered.json()) as { error: { code: string } }).error.code, "service_unavailable");

  const err = await t.throwsAsync(grpc, { instanceOf: ConnectError });
  t.is(err?.code, Code.Unavailable, err?.message);

  const [code] = (await exited) as [number | null];
  t.is(code, 0);
  await t.throwsAsync(fetch(`${url}/health`), undefined, "nothing listens any more");
});
