// The thaw TypeScript client: `new ThawClient("http://127.0.0.1:8000")`.
export { ThawClient, tierName } from "./thaw-client.js";
export type {
  AgentInfo,
  AgentStatus,
  ChatMessage,
  Completion,
  Delta,
  ExplainPlacementResponse,
  GenerationOptions,
  ModelInfo,
  ModelRegistration,
  PlacementScore,
  ThawClientOptions,
} from "./thaw-client.js";
