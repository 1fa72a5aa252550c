// startAgent builds the agent in parts; when a later part fails (here: the port is taken, after the
// disk tier, the pinned pool, the clients and the text workers exist), every part made before it is
// closed again, and the same state folder starts cleanly next time. The engine sockets' folder is
// the owner's only.
import test from "ava";
import { readdirSync, readlinkSync } from "node:fs";
import { stat } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { startAgent } from "../../src/agent/start-agent.js";
import { tempDirs } from "../fixtures/temp-dir.js";

const dirs = tempDirs("thaw-start-agent-");
test.after.always(() => dirs.cleanup());

/** The pinned pools (memfds) this process holds for agent `id`. */
function pools(id: string): string[] {
  return readdirSync("/proc/self/fd")
    .map((fd) => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`);
      } catch {
        return "";
      }
    })
    .filter((link) => link.includes(`thaw-pool-${id}`));
}

test("a start that fails part-way closes what it made: the pool is released, and the folder starts again", async (t) => {
  const taken = net.createServer();
  await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
  t.teardown(() => taken.close());
  const port = (taken.address() as net.AddressInfo).port;
  const dir = path.join(await dirs.make(), "agent");
  const options = { dir, agentId: "partial", engines: "none", dramBytes: 4 << 20, converter: "127.0.0.1:1", peers: ["127.0.0.1:2"], log: () => {} };
  const err = await t.throwsAsync(startAgent({ ...options, port }));
  t.regex(err!.message, /EADDRINUSE/);
  t.deepEqual(pools("partial"), [], "the pinned pool was disposed");

  const agent = await startAgent({ ...options, port: 0 });
  t.is(pools("partial").length, 1, "a running agent holds its pool (so the check above can see one)");
  await agent.close();
  t.deepEqual(pools("partial"), []);
});

test("the engine workers' sockets live in a folder only this user may enter", async (t) => {
  const dir = path.join(await dirs.make(), "agent");
  const agent = await startAgent({ dir, port: 0, engines: "none", dramBytes: 0, log: () => {} });
  t.teardown(() => agent.close());
  t.is((await stat(path.join(dir, "run"))).mode & 0o777, 0o700);
});
