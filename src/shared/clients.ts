// gRPC clients for thaw's internal services (h2c, or TLS when the address says https).
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { DescService } from "@bufbuild/protobuf";
import { sendToken } from "./auth.js";

/**
 * HTTP/2 sessions between thaw's processes carry prompts of up to the edge's 32 MB body limit, many
 * requests to one session. Node refuses new streams on a session once what it holds passes
 * maxSessionMemory (10 MB by default), so one large prompt would fail every request beside it
 * (ENHANCE_YOUR_CALM); the bound is set far above what a few such prompts hold at once.
 */
export const HTTP2_SESSION_OPTIONS = { maxSessionMemory: 512 } as const;

export interface ClientOptions {
  /** Shared secret of the internal services, if they require one. */
  token?: string;
  interceptors?: Interceptor[];
}

/** A client for `service` at `address` ("host:port" or a full http(s) URL). */
export function grpcClient<T extends DescService>(service: T, address: string, options: ClientOptions = {}): Client<T> {
  const baseUrl = /^https?:\/\//.test(address) ? address : `http://${address}`;
  const interceptors = [...(options.interceptors ?? [])];
  if (options.token) interceptors.push(sendToken(options.token));
  return createClient(service, createGrpcTransport({ baseUrl, interceptors, nodeOptions: HTTP2_SESSION_OPTIONS }));
}
