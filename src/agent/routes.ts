// The agent process's services.
import type { ConnectRouter } from "@connectrpc/connect";
import { AgentService } from "../gen/thaw/agent/v1/agent_service_pb.js";
import { AgentServiceImpl, type AgentServiceDeps } from "./agent-service.js";

export default function agentRoutes(deps: AgentServiceDeps) {
  return (router: ConnectRouter) => router.service(AgentService, new AgentServiceImpl(deps));
}
