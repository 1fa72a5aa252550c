// Runs an external runtime's command for the agent (external-runtime.ts) and ties it, with every
// process it starts, to the agent's life: the command runs in a process group of its own, and the
// whole group is stopped (SIGTERM, then SIGKILL after a grace) when the agent asks (SIGTERM to this
// process) or when the agent is gone — its end of this process's stdin closes, even when the agent
// was killed with SIGKILL. Plain JavaScript, so it starts with a bare `node` and nothing else.
//   node runtime-guardian.js COMMAND [ARG...]
import { spawn } from "node:child_process";

const GRACE_MS = Number(process.env.THAW_GUARDIAN_GRACE_MS ?? 5000);
const [command, ...args] = process.argv.slice(2);
if (command === undefined) {
  process.stderr.write("usage: runtime-guardian.js COMMAND [ARG...]\n");
  process.exit(2);
}

const child = spawn(command, args, { detached: true, stdio: ["ignore", "inherit", "inherit"] });
const group = (signal) => {
  try {
    process.kill(-child.pid, signal);
    return true;
  } catch {
    return false; // the group is empty
  }
};

let stopping = false;
/** Stops the whole group: SIGTERM, then SIGKILL once the grace has passed. */
function stop() {
  if (stopping) return;
  stopping = true;
  group("SIGTERM");
  setTimeout(() => group("SIGKILL"), GRACE_MS).unref();
}

process.on("SIGTERM", stop);
process.on("SIGINT", stop);
// The agent never writes to our stdin; its end closes when the agent exits, however it exits.
process.stdin.on("end", stop);
process.stdin.on("error", stop);
process.stdin.resume();

child.once("error", (err) => {
  process.stderr.write(`could not start ${command}: ${err.message}\n`);
  process.exit(127);
});
child.once("exit", (code, signal) => {
  // What the command started outside its own life goes with it.
  stop();
  const leave = () => {
    process.off("SIGTERM", stop);
    process.off("SIGINT", stop);
    if (signal !== null) process.kill(process.pid, signal); // end as the command ended
    process.exit(code ?? 1);
  };
  // Wait for the group to be gone (it was asked to stop; SIGKILL follows the grace). Members
  // that are only zombies nobody reaps would still count: the wait ends a little after the grace.
  const deadline = Date.now() + GRACE_MS + 1000;
  const wait = () => (group(0) && Date.now() < deadline ? setTimeout(wait, 20) : leave());
  wait();
});
