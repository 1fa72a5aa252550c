// The orchestrator process's services: SchedulerService, and gRPC server reflection (v1 and
// v1alpha) describing it, so grpcurl and `buf curl` need no proto files.
import type { ConnectRouter } from "@connectrpc/connect";
import { SchedulerService } from "../gen/thaw/scheduler/v1/scheduler_service_pb.js";
import { registerReflection } from "../shared/reflection/reflection.js";
import type { Scheduler } from "./scheduler/scheduler.js";
import { SchedulerServiceImpl } from "./scheduler/scheduler-service.js";

export default function orchestratorRoutes(scheduler: Scheduler) {
  return (router: ConnectRouter) => {
    router.service(SchedulerService, new SchedulerServiceImpl(scheduler));
    registerReflection(router, [SchedulerService]);
  };
}
