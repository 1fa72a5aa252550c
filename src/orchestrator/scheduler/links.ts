// The scheduler's out-of-process collaborators behind interfaces, so tests can put a real one or a
// controlled one behind them: agents (AgentService, one client per address) and the converter.
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { AgentService } from "../../gen/thaw/agent/v1/agent_service_pb.js";
import type { CheckpointIndex, CheckpointRef } from "../../gen/thaw/checkpoint/v1/checkpoint_pb.js";
import { ConvertPhase, ConverterService } from "../../gen/thaw/converter/v1/converter_service_pb.js";
import { identifyAgent } from "../../shared/agent-identity.js";
import { grpcClient } from "../../shared/clients.js";

export type AgentClient = Client<typeof AgentService>;

/** Clients for agents by address. */
export interface AgentConnector {
  client(address: string): AgentClient;
  /**
   * The id of the agent at `address` once it proved it is one (agent-identity.ts); rejects
   * otherwise. Absent only for connectors to agents in this process (tests, simulations): every
   * agent then counts as verified.
   */
  identify?(address: string, timeoutMs: number): Promise<string>;
}

/** gRPC (h2c) clients, one per address, reused by every call (HTTP/2 multiplexes the streams). */
export function grpcAgentConnector(options: { token?: string } = {}): AgentConnector {
  const clients = new Map<string, AgentClient>();
  return {
    identify: (address, timeoutMs) => identifyAgent(address, { token: options.token, timeoutMs }),
    client(address) {
      let client = clients.get(address);
      if (client === undefined) {
        client = grpcClient(AgentService, address, { token: options.token });
        clients.set(address, client);
      }
      return client;
    },
  };
}

/** What the scheduler asks of the converter. */
export interface ConverterLink {
  /** The published index, or undefined when the checkpoint does not exist. */
  getCheckpoint(ref: CheckpointRef, signal?: AbortSignal): Promise<CheckpointIndex | undefined>;
  /** Converts (or joins a running conversion of) a model; resolves with the published index. */
  convert(job: { source: string; revision: string; modelId: string }, signal?: AbortSignal): Promise<CheckpointIndex>;
}

/** The ConverterService at `address`. */
export function grpcConverterLink(address: string, options: { token?: string } = {}): ConverterLink {
  const client = grpcClient(ConverterService, address, { token: options.token });
  return {
    async getCheckpoint(ref, signal) {
      try {
        return (await client.getCheckpoint({ ref }, { signal })).index;
      } catch (err) {
        if (ConnectError.from(err).code === Code.NotFound) return undefined;
        throw err;
      }
    },
    async convert(job, signal) {
      for await (const progress of client.convert(job, { signal })) {
        if (progress.phase === ConvertPhase.DONE && progress.index) return progress.index;
      }
      throw new ConnectError(`converter ended the conversion of ${job.modelId} without publishing it`, Code.Internal);
    },
  };
}
