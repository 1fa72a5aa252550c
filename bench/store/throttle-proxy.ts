// A TCP proxy that caps each connection's rate in each direction, like the per-connection limit
// of a cloud object store; it shows what parallel parts and ranged reads buy on such a link.
import { connect, createServer, type Server, type Socket } from "node:net";

export class ThrottleProxy {
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  /** Forwards a free loopback port to targetUrl's host and port at `bytesPerSecond` per connection and direction. */
  static async start(targetUrl: string, bytesPerSecond: number): Promise<ThrottleProxy> {
    const target = new URL(targetUrl);
    let proxy: ThrottleProxy | undefined;
    const server = createServer((client) => proxy!.forward(client, target.hostname, Number(target.port), bytesPerSecond));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    if (address === null || typeof address === "string") throw new Error("proxy has no port");
    proxy = new ThrottleProxy(server, address.port);
    return proxy;
  }

  get origin(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private forward(client: Socket, host: string, port: number, rate: number): void {
    const upstream = connect(port, host);
    this.sockets.add(client).add(upstream);
    throttle(client, upstream, rate);
    throttle(upstream, client, rate);
    for (const [a, b] of [[client, upstream], [upstream, client]] as const) {
      a.on("error", () => b.destroy());
      a.on("close", () => {
        this.sockets.delete(a);
        b.end();
      });
    }
  }
}

/** Pipes `from` into `to`, pausing `from` whenever it runs ahead of `rate` bytes per second (no credit for idle time). */
function throttle(from: Socket, to: Socket, rate: number): void {
  let freeAt = 0; // when the bytes sent so far have "left" the link
  let waiting = false;
  from.on("data", (data: Buffer) => {
    to.write(data);
    const now = Date.now();
    freeAt = Math.max(freeAt, now) + (data.length / rate) * 1000;
    if (freeAt > now && !waiting) {
      waiting = true;
      from.pause();
      setTimeout(() => {
        waiting = false;
        from.resume();
      }, freeAt - now);
    }
  });
}
