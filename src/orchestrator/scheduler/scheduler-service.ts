// SchedulerService over gRPC/Connect: a thin layer over Scheduler (which the edge calls in process).
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import type {
  ChatCompletionRequest,
  CompletionRequest,
  ExplainPlacementRequest,
  HeartbeatRequest,
  RegisterModelRequest,
  SchedulerService,
  UnregisterModelRequest,
} from "../../gen/thaw/scheduler/v1/scheduler_service_pb.js";
import type { Scheduler } from "./scheduler.js";

export class SchedulerServiceImpl implements ServiceImpl<typeof SchedulerService> {
  constructor(private readonly scheduler: Scheduler) {}

  heartbeat(request: HeartbeatRequest) {
    if (request.status === undefined) throw new ConnectError("heartbeat without status", Code.InvalidArgument);
    return this.scheduler.heartbeat(request.status);
  }

  async registerModel(request: RegisterModelRequest) {
    if (request.model === undefined) throw new ConnectError("model is missing", Code.InvalidArgument);
    return { model: await this.scheduler.registerModel(request.model) };
  }

  async unregisterModel(request: UnregisterModelRequest) {
    await this.scheduler.unregisterModel(request.id);
    return {};
  }

  listModels() {
    return { models: this.scheduler.listModels() };
  }

  listAgents() {
    return { agents: this.scheduler.listAgents() };
  }

  explainPlacement(request: ExplainPlacementRequest) {
    const { alpha, beta, gamma, delta, epsilon, zeta } = this.scheduler.options.weights;
    const scores = this.scheduler.explain(request.model).map((s) => ({
      agentId: s.agentId,
      cacheLevel: s.cacheLevel,
      kvHitRate: s.kvHitRate,
      queueLength: s.queueLength,
      transferSeconds: s.transferSeconds,
      cacheTerm: s.cacheTerm,
      kvTerm: s.kvTerm,
      queueTerm: s.queueTerm,
      transferTerm: s.transferTerm,
      total: s.total,
      chosen: s.chosen,
      ineligibleReason: s.ineligibleReason,
      fitsWithoutEviction: s.memory.fit === "fits",
      evictionBytes: BigInt(s.memory.evictionBytes),
      evictionTerm: s.evictionTerm,
      device: s.memory.device,
      wakesDevice: s.wakesDevice,
      wakeTerm: s.wakeTerm,
    }));
    return { scores, alpha, beta, gamma, delta, epsilon, zeta, modelBytes: BigInt(this.scheduler.modelBytes(request.model)) };
  }

  chatCompletion(request: ChatCompletionRequest, ctx: HandlerContext) {
    return this.scheduler.chat(request, ctx.signal);
  }

  completion(request: CompletionRequest, ctx: HandlerContext) {
    return this.scheduler.complete(request, ctx.signal);
  }
}
