// A TCP proxy for tests that drops a connection after a set number of bytes, the way a flaky
// network or an overloaded server does, so retries and resumes can be checked against real servers.
import { createServer, connect, type Server, type Socket } from "node:net";

type Direction = "down" | "up";

export class CuttingProxy {
  /** Connections cut so far. */
  cuts = 0;
  private armed: { direction: Direction; remaining: number } | undefined;
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  /** Listens on a free loopback port and forwards every connection to targetUrl's host and port. */
  static async start(targetUrl: string): Promise<CuttingProxy> {
    const target = new URL(targetUrl);
    let proxy: CuttingProxy | undefined;
    const server = createServer((client) => proxy!.forward(client, target.hostname, Number(target.port)));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    if (address === null || typeof address === "string") throw new Error("proxy has no port");
    proxy = new CuttingProxy(server, address.port);
    return proxy;
  }

  /** Base URL of the proxy (targetUrl's path is not included). */
  get origin(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** The connection that carries the `bytes`-th byte from the server from now on is reset there. */
  cutResponseAfter(bytes: number): void {
    this.armed = { direction: "down", remaining: bytes };
  }

  /** The connection that carries the `bytes`-th byte to the server from now on is reset there. */
  cutRequestAfter(bytes: number): void {
    this.armed = { direction: "up", remaining: bytes };
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private forward(client: Socket, host: string, port: number): void {
    const upstream = connect(port, host);
    this.sockets.add(client).add(upstream);
    const drop = () => {
      client.resetAndDestroy();
      upstream.resetAndDestroy();
    };
    this.pipe(upstream, client, "down", drop);
    this.pipe(client, upstream, "up", drop);
    for (const socket of [client, upstream]) {
      socket.on("error", () => drop());
      socket.on("close", () => {
        this.sockets.delete(socket);
        (socket === client ? upstream : client).end();
      });
    }
  }

  private pipe(from: Socket, to: Socket, direction: Direction, drop: () => void): void {
    from.on("data", (data: Buffer) => {
      const armed = this.armed;
      if (armed !== undefined && armed.direction === direction) {
        if (data.length >= armed.remaining) {
          this.armed = undefined;
          this.cuts++;
          to.write(data.subarray(0, armed.remaining), () => drop());
          from.pause();
          return;
        }
        armed.remaining -= data.length;
      }
      if (!to.write(data)) {
        from.pause();
        to.once("drain", () => from.resume());
      }
    });
  }
}
