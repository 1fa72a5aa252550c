// `thaw serve` after an error nothing caught (injected once it serves, as a bug would throw): it
// does not die mid-way but shuts down as for SIGTERM, says why, and exits with status 1, so a
// supervisor starts it again; and a split deployment's parts restart under compose's policy.
import test from "ava";
import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { tempDirs } from "../fixtures/temp-dir.js";

const dirs = tempDirs("thaw-serve-fatal-");
test.after.always(() => dirs.cleanup());

test("an uncaught error: thaw serve shuts down, says why, and exits with status 1", async (t) => {
  const stateDir = await dirs.make();
  const serve = spawn(
    process.execPath,
    ["--import", path.resolve("test/fixtures/fail-when-ready.mjs"), path.resolve("src/cli/thaw.js"), "serve", "--port", "0", "--state-dir", stateDir, "--engines", "none", "--dram-bytes", "0"],
    { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, THAW_TEST_READY_LINE: "OpenAI API on" } },
  );
  t.teardown(() => serve.kill("SIGKILL"));
  let stderr = "";
  serve.stderr!.on("data", (d) => (stderr += d));
  const code = await new Promise<number | null>((resolve) => serve.once("exit", (c) => resolve(c)));
  t.is(code, 1, stderr);
  t.regex(stderr, /thaw serve: fatal: Error: injected failure/);
  t.regex(stderr, /thaw serve: shutting down \(running requests may finish for up to 0 ms\); then exiting with status 1/);
});

test("compose restarts every part of a split deployment that exits", async (t) => {
  const compose = await readFile("docker/compose.yaml", "utf8");
  const services = compose.split(/\n  (?=\w+:\n)/).slice(1);
  t.is(services.length, 3);
  for (const service of services) t.regex(service, /\n    restart: unless-stopped(\n|$)/, service.split(":")[0]);
});
