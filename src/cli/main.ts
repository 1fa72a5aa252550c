// The `thaw` command line. Each subcommand lives in its own module and is loaded on demand,
// so `thaw make-tiny-model` does not pay for starting servers.
import { commands } from "./commands.js";

const [name, ...args] = process.argv.slice(2);
const command = name === undefined ? undefined : commands.get(name);

if (command === undefined) {
  const width = Math.max(...[...commands.keys()].map((k) => k.length));
  const lines = [...commands.entries()].map(([k, c]) => `  ${k.padEnd(width)}  ${c.summary}`);
  const out = `usage: thaw <command> [options]\n\ncommands:\n${lines.join("\n")}\n\n'thaw <command> --help' for a command's options.\n`;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    process.stdout.write(out);
  } else {
    process.stderr.write(`thaw: unknown command '${name}'\n\n${out}`);
    process.exitCode = 2;
  }
} else {
  try {
    const run = await command.load();
    await run(args);
  } catch (err) {
    process.stderr.write(`thaw ${name}: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = process.exitCode || 1;
  }
}
