// Heartbeats to the scheduler: the agent's status every interval the scheduler's reply names
// (about a second). A scheduler that is down or restarting is retried at the same pace; the
// agent keeps serving meanwhile and reports once on outage and once on recovery.
import type { Client } from "@connectrpc/connect";
import type { AgentStatus } from "../gen/thaw/agent/v1/agent_pb.js";
import type { SchedulerService } from "../gen/thaw/scheduler/v1/scheduler_service_pb.js";

export interface HeartbeatOptions {
  client: Client<typeof SchedulerService>;
  status: () => AgentStatus;
  /** Used until the scheduler names an interval, and while it is unreachable (default 1000). */
  defaultIntervalMs?: number;
  log: (line: string) => void;
}

export interface Heartbeats {
  /** Sends one heartbeat now (after a load, so the scheduler learns at once). */
  poke(): void;
  stop(): Promise<void>;
  /** Heartbeats the scheduler accepted. */
  readonly sent: number;
}

export function startHeartbeats(options: HeartbeatOptions): Heartbeats {
  const fallback = options.defaultIntervalMs ?? 1000;
  const stopper = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  let wake: (() => void) | undefined;
  let sent = 0;
  let down = false;
  const loop = (async () => {
    while (!stopper.signal.aborted) {
      let interval = fallback;
      try {
        const reply = await options.client.heartbeat({ status: options.status() }, { signal: stopper.signal, timeoutMs: 5000 });
        sent++;
        if (reply.intervalMs > 0) interval = Math.min(reply.intervalMs, 60_000);
        if (down) options.log("scheduler reachable again");
        down = false;
      } catch (err) {
        if (stopper.signal.aborted) break;
        if (!down) options.log(`heartbeat failed (${(err as Error).message}); retrying every ${fallback} ms`);
        down = true;
      }
      await new Promise<void>((resolve) => {
        wake = resolve;
        timer = setTimeout(resolve, interval);
      });
      wake = undefined;
    }
  })();
  return {
    poke() {
      if (timer !== undefined) clearTimeout(timer);
      wake?.();
    },
    async stop() {
      stopper.abort();
      if (timer !== undefined) clearTimeout(timer);
      wake?.();
      await loop;
    },
    get sent() {
      return sent;
    },
  };
}
