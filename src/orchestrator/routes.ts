// The orchestrator process's services: SchedulerService, and gRPC server reflection (v1 and
// v1alpha) describing it, so grpcurl and `buf curl` need no proto files; and who may call them.
import type { ConnectRouter } from "@connectrpc/connect";
import { SchedulerService } from "../gen/thaw/scheduler/v1/scheduler_service_pb.js";
import { rule, type AccessRules } from "../shared/auth.js";
import { registerReflection } from "../shared/reflection/reflection.js";
import type { Scheduler } from "./scheduler/scheduler.js";
import { SchedulerServiceImpl } from "./scheduler/scheduler-service.js";

export default function orchestratorRoutes(scheduler: Scheduler) {
  return (router: ConnectRouter) => {
    router.service(SchedulerService, new SchedulerServiceImpl(scheduler));
    registerReflection(router, [SchedulerService]);
  };
}

/**
 * Agents heartbeat with the internal token; users (API keys) may generate and list models, as on
 * /v1/*; everything else — the model registry, agents, placement — is the operators' (admin).
 */
export const SCHEDULER_ACCESS: AccessRules = new Map([
  ...rule(SchedulerService, ["internal"], ["Heartbeat"]),
  ...rule(SchedulerService, ["user", "admin"], ["ChatCompletion", "Completion", "ListModels"]),
  ...rule(SchedulerService, ["admin"]),
  ["*", ["user", "internal", "admin"]], // server reflection: whoever holds any credential
]);
