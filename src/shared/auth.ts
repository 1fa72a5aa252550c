// Who may call what. Every credential is a Bearer token; each grants one role:
//   internal  THAW_INTERNAL_TOKEN: thaw's own processes (heartbeats, agent, converter RPCs)
//   admin     THAW_ADMIN_TOKEN: operators (model registry, placement, unload, delete, launch)
//   user      an API key (THAW_API_KEYS): /v1/* and the generation RPCs, nothing else
// A role whose secret is not configured is open for internal (allowed on loopback only: see
// refuseOpenBind) and for user (no API keys: an open API), and closed for admin.
//
// An agent also proves, without sending it, that it holds the internal token: a caller sends a
// random challenge, the agent answers an HMAC of it with the token, bound to its id and address,
// in response headers (on a refusal as well). The scheduler trusts an agent, and an agent a peer,
// only after such a proof (agent-identity.ts).
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { DescService } from "@bufbuild/protobuf";

export type Role = "internal" | "admin" | "user";

export interface Credentials {
  /** Shared secret of thaw's own processes; absent: internal calls need none (loopback only). */
  internalToken?: string;
  /** The operators' secret; absent: operator calls are refused. */
  adminToken?: string;
  /** User API keys; none: user calls need none. */
  apiKeys?: readonly string[];
}

/** Roles allowed per RPC, keyed "pkg.Service/Method", "pkg.Service/*" or "*"; an RPC not listed needs admin. */
export type AccessRules = ReadonlyMap<string, readonly Role[]>;

/** Rules for `methods` of `service` (every method when none are named). */
export function rule(service: DescService, roles: readonly Role[], methods?: readonly string[]): [string, readonly Role[]][] {
  if (methods === undefined) return [[`${service.typeName}/*`, roles]];
  return methods.map((m) => {
    if (!service.methods.some((d) => d.name === m)) throw new Error(`${service.typeName} has no method ${m}`);
    return [`${service.typeName}/${m}`, roles];
  });
}

/** The headers of the proof of the internal token. */
export const CHALLENGE_HEADER = "thaw-challenge";
export const AGENT_ID_HEADER = "thaw-agent-id";
export const PROOF_HEADER = "thaw-agent-proof";

/** What an agent proves it is: its id and the address it advertises. */
export interface Identity {
  agentId: string;
  address: string;
}

/** HMAC-SHA256 of the challenge with the internal token, bound to the agent's id and address. */
export function proofOf(token: string, challenge: string, identity: Identity): string {
  return createHmac("sha256", token).update(`thaw-agent-proof\n${challenge}\n${identity.agentId}\n${identity.address}`).digest("base64url");
}

export function newChallenge(): string {
  return randomBytes(24).toString("base64url");
}

/** A fresh secret for a token (`thaw serve`'s internal token, a generated admin token). */
export function newToken(): string {
  return randomBytes(32).toString("base64url");
}

/** Constant-time equality of two secrets (compared as SHA-256 digests, so lengths do not leak). */
export function sameSecret(a: string, b: string): boolean {
  return timingSafeEqual(digest(a), digest(b));
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text).digest();
}

const ROLE_NAMES: Record<Role, string> = {
  internal: "the internal token (THAW_INTERNAL_TOKEN, the same on every thaw process)",
  admin: "the admin token (THAW_ADMIN_TOKEN or --admin-token; thaw serve and thaw orchestrator write a generated one to <state-dir>/admin-token)",
  user: "an API key (--api-key, THAW_API_KEYS)",
};

/**
 * Checks every call against `rules`: UNAUTHENTICATED without a credential this process knows,
 * PERMISSION_DENIED with one whose role the RPC does not allow. With `identity`, answers a
 * challenge with the proof of the internal token.
 */
export function authorize(credentials: Credentials, rules: AccessRules, identity?: () => Identity): Interceptor {
  const internal = credentials.internalToken ? digest(credentials.internalToken) : undefined;
  const admin = credentials.adminToken ? digest(credentials.adminToken) : undefined;
  const keys = (credentials.apiKeys ?? []).filter((k) => k !== "").map(digest);
  const token = credentials.internalToken;

  /** Roles the caller holds: by its Bearer token, plus the roles that need no secret here. */
  const rolesOf = (authorization: string | null): { held: Set<Role>; presented: boolean } => {
    const held = new Set<Role>();
    if (internal === undefined) held.add("internal");
    if (keys.length === 0) held.add("user");
    const m = authorization === null ? null : /^Bearer\s+(\S+)\s*$/i.exec(authorization);
    if (m === null) return { held, presented: false };
    const given = digest(m[1]);
    // Every comparison runs, so timing does not tell which secret matched.
    let isAdmin = false;
    let isInternal = false;
    let isUser = false;
    if (admin !== undefined) isAdmin = timingSafeEqual(given, admin);
    if (internal !== undefined) isInternal = timingSafeEqual(given, internal);
    for (const k of keys) isUser = timingSafeEqual(given, k) || isUser;
    if (isAdmin) held.add("admin");
    if (isInternal) held.add("internal");
    if (isUser) held.add("user");
    return { held, presented: isAdmin || isInternal || isUser };
  };

  return (next) => async (req) => {
    const name = `${req.service.typeName}/${req.method.name}`;
    const allowed = rules.get(name) ?? rules.get(`${req.service.typeName}/*`) ?? rules.get("*") ?? ["admin"];
    const challenge = req.header.get(CHALLENGE_HEADER);
    const proof = new Headers();
    if (challenge !== null && token !== undefined && identity !== undefined && challenge.length <= 200) {
      const id = identity();
      proof.set(AGENT_ID_HEADER, id.agentId);
      proof.set(PROOF_HEADER, proofOf(token, challenge, id));
    }
    const { held, presented } = rolesOf(req.header.get("authorization"));
    if (!allowed.some((r) => held.has(r))) {
      const needs = allowed.map((r) => ROLE_NAMES[r]).join(" or ");
      throw presented
        ? new ConnectError(`${req.method.name} is not allowed with this credential: it needs ${needs}`, Code.PermissionDenied, proof)
        : new ConnectError(`${req.method.name} needs ${needs}`, Code.Unauthenticated, proof);
    }
    const res = await next(req);
    proof.forEach((value, key) => res.header.set(key, value));
    return res;
  };
}

/** Adds a Bearer token to outgoing calls. */
export function sendToken(token: string): Interceptor {
  return (next) => async (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}

/** Every RPC needs the internal token (or none when `token` is undefined). */
export function requireToken(token: string | undefined): Interceptor {
  return authorize({ internalToken: token }, new Map([["*", ["internal"]]]));
}

/** Whether `host` is a loopback interface (only this machine can reach it). */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h) || h === "::ffff:127.0.0.1";
}

/**
 * A process that others can reach must authenticate its internal calls: binding beyond loopback
 * without an internal token is refused before anything starts.
 */
export function refuseOpenBind(host: string, internalToken: string | undefined, what: string): void {
  if (internalToken || isLoopback(host)) return;
  throw new Error(
    `${what}: refusing to listen on ${host} without an internal token: anyone who reaches the port could call it. ` +
      "Set THAW_INTERNAL_TOKEN (or --internal-token), the same secret on every thaw process, or bind to 127.0.0.1",
  );
}
