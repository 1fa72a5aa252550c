// Peers a caller names (DownloadChunks, LoadModel) are fetched from only once they proved they are
// agents of this deployment (agent-identity.ts): the agent never connects for chunks, nor sends its
// token, to an address a request made up. A peer that answers but cannot prove it is refused; one
// that does not answer (an agent that just died) is left out, and the origin serves instead.
// Peers the operator configured (--peer) are trusted as they are.
import { Code, ConnectError } from "@connectrpc/connect";
import { identifyAgent } from "../shared/agent-identity.js";
import { SharedFlights } from "../shared/shared-flight.js";

export interface PeerAdmissionOptions {
  /** The internal token the peers must prove they hold (absent: they must answer as agents). */
  token?: string;
  /** This agent's own address (never its own peer). */
  self: () => string;
  /** Peers the operator configured. */
  trusted?: readonly string[];
  /** How long a proof holds, ms (default 60 s). */
  proofTtlMs?: number;
  /** Who answers at an address (default: identifyAgent). */
  identify?: (address: string, signal?: AbortSignal) => Promise<string>;
  now?: () => number;
  log: (line: string) => void;
}

/** host:port, [v6]:port — nothing a URL could smuggle a scheme or a path through. */
const ADDRESS = /^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\]):\d{1,5}$/;

export class PeerAdmission {
  /** Address → until when its proof holds (ms). */
  private readonly proven = new Map<string, number>();
  private readonly proving = new SharedFlights<never, void>();
  private readonly identify: (address: string, signal?: AbortSignal) => Promise<string>;
  private readonly now: () => number;

  constructor(private readonly options: PeerAdmissionOptions) {
    this.identify = options.identify ?? ((address, signal) => identifyAgent(address, { token: options.token, signal, timeoutMs: 5000 }));
    this.now = options.now ?? Date.now;
  }

  /**
   * The peers of a request that may be fetched from, in order, besides the configured ones.
   * INVALID_ARGUMENT for a malformed address; PERMISSION_DENIED for a peer that answered but is
   * not an agent of this deployment.
   */
  async admit(peers: readonly string[], signal?: AbortSignal): Promise<string[]> {
    const self = this.options.self();
    const trusted = new Set(this.options.trusted ?? []);
    const named = [...new Set(peers)].filter((p) => p !== "" && p !== self && !trusted.has(p));
    for (const p of named) {
      if (!ADDRESS.test(p)) throw new ConnectError(`peer ${JSON.stringify(p.slice(0, 100))} is not a host:port address`, Code.InvalidArgument);
    }
    const answered = await Promise.all(named.map((p) => this.prove(p, signal)));
    return named.filter((_, i) => answered[i]);
  }

  /** True once `address` proved itself; false when nothing answers there; throws when something else does. */
  private async prove(address: string, signal?: AbortSignal): Promise<boolean> {
    if ((this.proven.get(address) ?? 0) > this.now()) return true;
    try {
      await this.proving.run(address, async () => {
        await this.identify(address);
        this.proven.set(address, this.now() + (this.options.proofTtlMs ?? 60_000));
      }, undefined, signal);
      return true;
    } catch (err) {
      signal?.throwIfAborted();
      const e = ConnectError.from(err);
      if (e.code === Code.Unavailable || e.code === Code.DeadlineExceeded) {
        this.options.log(`peer ${address} does not answer (${e.rawMessage}); fetching without it`);
        return false;
      }
      throw new ConnectError(`peer ${address} is not an agent of this deployment: ${e.rawMessage}`, Code.PermissionDenied);
    }
  }
}
