// A TestAgent in a process of its own, so a test can kill it for real (SIGKILL: no statuses, no
// goodbyes, the kernel closes its sockets). Options come as JSON in argv[2]. Prints "ready" once
// its first heartbeat went out, and "infer" as each Infer arrives.
import { TestAgent, type TestAgentOptions } from "./test-agent.js";

const options = JSON.parse(process.argv[2]) as TestAgentOptions;
await TestAgent.start({ ...options, onInfer: () => process.stdout.write("infer\n") });
process.stdout.write("ready\n");
