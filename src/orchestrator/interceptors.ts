// Cross-cutting concerns of the orchestrator's RPCs: every response carries x-request-id (the
// caller's, or a fresh one), as the edge's REST responses do.
import { randomUUID } from "node:crypto";
import type { Interceptor } from "@connectrpc/connect";

export function requestIdInterceptor(): Interceptor {
  return (next) => async (req) => {
    const id = req.header.get("x-request-id") || randomUUID();
    const res = await next(req);
    res.header.set("x-request-id", id);
    return res;
  };
}
