// Cross-cutting concerns of the orchestrator's RPCs: every response carries x-request-id (the
// caller's, or a fresh one), as the edge's REST responses do; every call is counted and timed by
// method and final code (rpc_requests_total, rpc_duration_seconds).
import { randomUUID } from "node:crypto";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { OrchestratorMetrics } from "./metrics.js";

export function requestIdInterceptor(): Interceptor {
  return (next) => async (req) => {
    const id = req.header.get("x-request-id") || randomUUID();
    const res = await next(req);
    res.header.set("x-request-id", id);
    return res;
  };
}

export function metricsInterceptor(metrics: OrchestratorMetrics): Interceptor {
  return (next) => async (req) => {
    const method = req.method.name;
    const started = performance.now();
    const done = (err?: unknown) => {
      const code = err === undefined ? "OK" : (Code[ConnectError.from(err).code] ?? "Unknown");
      metrics.rpcRequests.inc({ method, code });
      metrics.rpcDuration.observe({ method }, (performance.now() - started) / 1000);
    };
    let res;
    try {
      res = await next(req);
    } catch (err) {
      done(err);
      throw err;
    }
    if (!res.stream) {
      done();
      return res;
    }
    const messages = res.message;
    return {
      ...res,
      message: (async function* () {
        try {
          yield* messages;
        } catch (err) {
          done(err);
          throw err;
        }
        done();
      })(),
    };
  };
}
