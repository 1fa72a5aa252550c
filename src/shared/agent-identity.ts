// Who answers at an agent address: the scheduler places on an agent, and an agent fetches chunks
// from a peer, only once the address has proven to be a thaw agent of this deployment. With an
// internal token, the proof is an HMAC of a fresh challenge (auth.ts), so the token itself never
// goes to an address that has not proven it holds it; without one (loopback only), the agent must
// answer GetStatus with the address it was reached at.
import { createClient } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";
import { AgentService } from "../gen/thaw/agent/v1/agent_service_pb.js";
import { AGENT_ID_HEADER, CHALLENGE_HEADER, PROOF_HEADER, newChallenge, proofOf, sameSecret } from "./auth.js";

export interface IdentifyOptions {
  /** The internal token; absent: the agent must answer GetStatus openly. */
  token?: string;
  timeoutMs?: number;
  signal?: AbortSignal;
}

/**
 * The id of the agent at `address`, once it proved it is one; PERMISSION_DENIED when something
 * answers there that cannot prove it; the call's own error (UNAVAILABLE, DEADLINE_EXCEEDED) when
 * nothing answers.
 */
export async function identifyAgent(address: string, options: IdentifyOptions = {}): Promise<string> {
  const baseUrl = /^https?:\/\//.test(address) ? address : `http://${address}`;
  const sessions = new Http2SessionManager(baseUrl);
  const client = createClient(AgentService, createGrpcTransport({ baseUrl, sessionManager: sessions }));
  const challenge = newChallenge();
  let headers = new Headers();
  try {
    let agentId: string | undefined;
    let advertised: string | undefined;
    try {
      const r = await client.getStatus(
        {},
        { headers: { [CHALLENGE_HEADER]: challenge }, timeoutMs: options.timeoutMs ?? 5000, signal: options.signal, onHeader: (h) => (headers = h) },
      );
      agentId = r.status?.agentId;
      advertised = r.status?.address;
    } catch (err) {
      const e = ConnectError.from(err);
      // A refusal still carries the proof; anything else means nothing (or no agent) answers.
      if (e.code !== Code.Unauthenticated || options.token === undefined) throw e;
      headers = e.metadata;
    }
    if (options.token !== undefined) {
      const id = headers.get(AGENT_ID_HEADER);
      const proof = headers.get(PROOF_HEADER);
      if (id === null || proof === null || !sameSecret(proof, proofOf(options.token, challenge, { agentId: id, address }))) {
        throw new ConnectError(`${address} did not prove that it is an agent holding this deployment's internal token`, Code.PermissionDenied);
      }
      return id;
    }
    if (agentId === undefined || agentId === "" || advertised !== address) {
      throw new ConnectError(`${address} answered, but not as the thaw agent advertised at that address`, Code.PermissionDenied);
    }
    return agentId;
  } finally {
    sessions.abort();
  }
}
