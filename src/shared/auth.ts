// Optional shared-secret protection for internal services (agent, converter, scheduler RPCs):
// when a token is configured, every call must carry `authorization: Bearer <token>`.
import { timingSafeEqual } from "node:crypto";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";

export function requireToken(token: string): Interceptor {
  const expected = Buffer.from(`Bearer ${token}`);
  return (next) => async (req) => {
    const given = Buffer.from(req.header.get("authorization") ?? "");
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      throw new ConnectError("missing or wrong internal token (set THAW_INTERNAL_TOKEN on both sides)", Code.Unauthenticated);
    }
    return next(req);
  };
}

/** Adds the token to outgoing calls. */
export function sendToken(token: string): Interceptor {
  return (next) => async (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}
