// What the edge needs from the scheduler. In `thaw orchestrator` it is the Scheduler itself, in
// process; tests may put a controlled one behind it.
import type { ChatCompletionRequest, CompletionRequest } from "../../gen/thaw/scheduler/v1/scheduler_service_pb.js";
import type { ModelInfo } from "../../gen/thaw/scheduler/v1/scheduler_pb.js";
import type { ChoiceOutput } from "../scheduler/scheduler.js";

export interface EdgeBackend {
  /** Streams the choices' output; fails before the first item with NOT_FOUND, RESOURCE_EXHAUSTED, … */
  chat(request: ChatCompletionRequest, signal: AbortSignal): AsyncIterable<ChoiceOutput>;
  complete(request: CompletionRequest, signal: AbortSignal): AsyncIterable<ChoiceOutput>;
  listModels(): ModelInfo[];
  getModel(id: string): ModelInfo | undefined;
  /** True when requests can be placed (an agent is live). */
  ready(): boolean;
}

export type { ChoiceOutput };
