// gRPC clients the agent owns: to peers, the converter, the scheduler (h2c over TCP) and to its
// engine workers (h2c over a unix socket). Each has its own HTTP/2 session manager, so the agent
// can close every connection it opened when it stops.
import net from "node:net";
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";
import type { DescService } from "@bufbuild/protobuf";
import { sendToken } from "../shared/auth.js";
import { HTTP2_SESSION_OPTIONS } from "../shared/clients.js";

export interface OwnedClient<T extends DescService> {
  client: Client<T>;
  close(): void;
}

/** A client for `service` at "host:port" (or an http(s) URL), sending `token` when given. */
export function tcpClient<T extends DescService>(service: T, address: string, token?: string): OwnedClient<T> {
  const baseUrl = /^https?:\/\//.test(address) ? address : `http://${address}`;
  const sessions = new Http2SessionManager(baseUrl, { idleConnectionTimeoutMs: 60_000 }, HTTP2_SESSION_OPTIONS);
  const interceptors: Interceptor[] = token ? [sendToken(token)] : [];
  const transport = createGrpcTransport({ baseUrl, sessionManager: sessions, interceptors });
  return { client: createClient(service, transport), close: () => sessions.abort() };
}

/** A client for `service` listening on the unix socket `socketPath`. */
export function unixClient<T extends DescService>(service: T, socketPath: string): OwnedClient<T> {
  const baseUrl = "http://localhost";
  const sessions = new Http2SessionManager(baseUrl, { idleConnectionTimeoutMs: 3_600_000 }, {
    ...HTTP2_SESSION_OPTIONS,
    createConnection: () => net.connect(socketPath),
  });
  const transport = createGrpcTransport({ baseUrl, sessionManager: sessions });
  return { client: createClient(service, transport), close: () => sessions.abort() };
}

/** Clients by address, made on first use and closed together. */
export class ClientCache<T extends DescService> {
  private readonly clients = new Map<string, OwnedClient<T>>();
  constructor(
    private readonly service: T,
    private readonly token?: string,
  ) {}

  get(address: string): Client<T> {
    let owned = this.clients.get(address);
    if (owned === undefined) {
      owned = tcpClient(this.service, address, this.token);
      this.clients.set(address, owned);
    }
    return owned.client;
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}
