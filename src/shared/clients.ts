// gRPC clients for thaw's internal services (h2c, or TLS when the address says https).
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { DescService } from "@bufbuild/protobuf";
import { sendToken } from "./auth.js";

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
  return createClient(service, createGrpcTransport({ baseUrl, interceptors }));
}
