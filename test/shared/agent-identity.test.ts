// The proof of the internal token over real servers: an agent proves it without the token ever
// being sent to it; the proof is bound to the address it was reached at, so a stranger that relays
// a challenge to a real agent cannot pass it off as its own; without a token (loopback only) the
// agent must answer at the address it advertises.
import test from "ava";
import { Code, ConnectError, createClient, type ConnectRouter } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AgentService } from "../../src/gen/thaw/agent/v1/agent_service_pb.js";
import { AGENT_ACCESS } from "../../src/agent/routes.js";
import { identifyAgent } from "../../src/shared/agent-identity.js";
import { CHALLENGE_HEADER, authorize, isLoopback, refuseOpenBind } from "../../src/shared/auth.js";
import { startServer, type RunningServer } from "../../src/shared/server.js";

const TOKEN = "internal-secret";

/** An AgentService that answers GetStatus as `agentId`, recording the authorization it was sent. */
async function agentServer(agentId: string, token: string | undefined, seen: (string | null)[] = []): Promise<RunningServer & { address: string }> {
  let address = "";
  const server = await startServer({
    routes: (r: ConnectRouter) =>
      r.service(AgentService, {
        getStatus: (_req, ctx) => {
          seen.push(ctx.requestHeader.get("authorization"));
          return { status: { agentId, address } };
        },
      }),
    interceptors: [authorize({ internalToken: token }, AGENT_ACCESS, () => ({ agentId, address }))],
  });
  address = `127.0.0.1:${server.port}`;
  return Object.assign(server, { address });
}

test("an agent holding the token proves it at its address; the token is never sent to it", async (t) => {
  const seen: (string | null)[] = [];
  const agent = await agentServer("a", TOKEN, seen);
  t.teardown(() => agent.close());
  t.is(await identifyAgent(agent.address, { token: TOKEN }), "a");
  t.deepEqual(seen, [], "the call was refused before GetStatus ran: no token went out");
  const wrong = ConnectError.from(await t.throwsAsync(identifyAgent(agent.address, { token: "another deployment" })));
  t.is(wrong.code, Code.PermissionDenied);
});

test("a stranger relaying the challenge to a real agent does not pass: the proof names the real agent's address", async (t) => {
  const real = await agentServer("real", TOKEN);
  t.teardown(() => real.close());
  const relay = createClient(AgentService, createGrpcTransport({ baseUrl: real.url }));
  const stranger = await startServer({
    routes: (r: ConnectRouter) =>
      r.service(AgentService, {
        // Forwards the challenge and hands back the real agent's proof headers.
        getStatus: async (_req, ctx) => {
          try {
            await relay.getStatus({}, { headers: { [CHALLENGE_HEADER]: ctx.requestHeader.get(CHALLENGE_HEADER) ?? "" } });
          } catch (err) {
            ConnectError.from(err).metadata.forEach((v, k) => (k.startsWith("thaw-") ? ctx.responseHeader.set(k, v) : undefined));
          }
          return { status: { agentId: "real", address: "" } };
        },
      }),
  });
  t.teardown(() => stranger.close());
  const err = ConnectError.from(await t.throwsAsync(identifyAgent(`127.0.0.1:${stranger.port}`, { token: TOKEN })));
  t.is(err.code, Code.PermissionDenied);
  t.regex(err.rawMessage, /did not prove/);
});

test("without a token the agent must answer as itself at the address it advertises; nothing answering is UNAVAILABLE", async (t) => {
  const open = await agentServer("open", undefined);
  t.teardown(() => open.close());
  t.is(await identifyAgent(open.address), "open");
  t.is(ConnectError.from(await t.throwsAsync(identifyAgent(`localhost:${open.port}`))).code, Code.PermissionDenied, "it advertises 127.0.0.1");
  t.is(ConnectError.from(await t.throwsAsync(identifyAgent(open.address, { token: TOKEN }))).code, Code.PermissionDenied, "a deployment with a token does not trust it");
  t.is(ConnectError.from(await t.throwsAsync(identifyAgent("127.0.0.1:1"))).code, Code.Unavailable);
});

test("loopback hosts need no token; any other host does", (t) => {
  for (const host of ["127.0.0.1", "localhost", "::1", "[::1]", "127.1.2.3"]) t.true(isLoopback(host), host);
  for (const host of ["0.0.0.0", "::", "10.0.0.1", "example.com"]) t.false(isLoopback(host), host);
  t.notThrows(() => refuseOpenBind("127.0.0.1", undefined, "x"));
  t.notThrows(() => refuseOpenBind("0.0.0.0", "secret", "x"));
  t.throws(() => refuseOpenBind("0.0.0.0", undefined, "thaw converter"), { message: /^thaw converter: refusing to listen on 0\.0\.0\.0 without an internal token/ });
});
