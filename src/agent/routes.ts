// The agent process's services: AgentService, and gRPC server reflection describing it, so
// operators can call it with grpcurl or `buf curl` without proto files; and who may call them.
import type { ConnectRouter } from "@connectrpc/connect";
import { AgentService } from "../gen/thaw/agent/v1/agent_service_pb.js";
import { rule, type AccessRules } from "../shared/auth.js";
import { registerReflection } from "../shared/reflection/reflection.js";
import { AgentServiceImpl, type AgentServiceDeps } from "./agent-service.js";

export default function agentRoutes(deps: AgentServiceDeps) {
  return (router: ConnectRouter) => {
    router.service(AgentService, new AgentServiceImpl(deps));
    registerReflection(router, [AgentService]);
  };
}

/** Every agent RPC is thaw's own (the scheduler, peers) or an operator's: the internal or the admin token. */
export const AGENT_ACCESS: AccessRules = new Map([...rule(AgentService, ["internal", "admin"]), ["*", ["internal", "admin"]]]);
