// A small network of Linux network namespaces for the multi-host test: one "switch" namespace
// holding a bridge, and hosts each in a namespace of their own with one address on it, joined to
// the bridge by a veth pair. The test's own process (the root namespace) joins too, so it can reach
// every host. Links can be cut and restored at the switch (`ip link set … down`), and a host can
// be cut off from one address only (a blackhole route), as a partial partition.
import { execFileSync } from "node:child_process";

export interface Host {
  name: string;
  /** The namespace (for `ip netns exec`). */
  ns: string;
  address: string;
}

const SUBNET = "10.231.7";

/** True when this process may make network namespaces (root with `ip netns`); else why not. */
export function netnsUnavailable(): string | undefined {
  const probe = `thawprobe${process.pid}`;
  try {
    ip("netns", "add", probe);
    ip("netns", "del", probe);
    return undefined;
  } catch (err) {
    return `ip netns is not available here: ${(err as Error).message.split("\n")[0]}`;
  }
}

export class TestNetwork {
  readonly hosts = new Map<string, Host>();
  private readonly prefix: string;
  private readonly sw: string;
  private next = 10;
  /** Address of the test process on the bridge. */
  readonly ownAddress = `${SUBNET}.254`;

  private constructor() {
    // Short names: interface names are at most 15 bytes ("th" + pid + "r").
    this.prefix = `th${process.pid}`;
    this.sw = `${this.prefix}sw`;
  }

  /** The switch namespace with its bridge, and the test process joined to it. */
  static create(): TestNetwork {
    removeStale();
    const net = new TestNetwork();
    try {
      ip("netns", "add", net.sw);
      ip("-n", net.sw, "link", "add", "br0", "type", "bridge");
      ip("-n", net.sw, "link", "set", "br0", "up");
      ip("-n", net.sw, "link", "set", "lo", "up");
      // The root namespace's leg.
      ip("link", "add", `${net.prefix}r`, "type", "veth", "peer", "name", "root", "netns", net.sw);
      ip("-n", net.sw, "link", "set", "root", "master", "br0", "up");
      ip("addr", "add", `${net.ownAddress}/24`, "dev", `${net.prefix}r`);
      ip("link", "set", `${net.prefix}r`, "up");
    } catch (err) {
      net.destroy();
      throw err;
    }
    return net;
  }

  /** A new host with the next address. */
  addHost(name: string): Host {
    const address = `${SUBNET}.${this.next++}`;
    const ns = `${this.prefix}${name}`;
    const host = { name, ns, address };
    this.hosts.set(name, host);
    ip("netns", "add", ns);
    ip("-n", ns, "link", "set", "lo", "up");
    ip("-n", this.sw, "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", ns);
    ip("-n", this.sw, "link", "set", name, "master", "br0", "up");
    ip("-n", ns, "addr", "add", `${address}/24`, "dev", "eth0");
    ip("-n", ns, "link", "set", "eth0", "up");
    return host;
  }

  /** The command prefix that runs a program on the host. */
  exec(host: Host): string[] {
    return ["ip", "netns", "exec", host.ns];
  }

  /** Cuts the host's link at the switch: nothing reaches it, nothing it sends arrives (no RST either). */
  cut(host: Host): void {
    ip("-n", this.sw, "link", "set", host.name, "down");
  }

  restore(host: Host): void {
    ip("-n", this.sw, "link", "set", host.name, "up");
  }

  /** The host can no longer reach `address` (and its packets to it vanish), all else stays. */
  partition(host: Host, address: string): void {
    ip("-n", host.ns, "route", "add", "blackhole", `${address}/32`);
  }

  heal(host: Host, address: string): void {
    ip("-n", host.ns, "route", "del", "blackhole", `${address}/32`);
  }

  /** Removes every namespace and link this network made (idempotent; never throws). */
  destroy(): void {
    for (const h of this.hosts.values()) quietly(() => ip("netns", "del", h.ns));
    quietly(() => ip("link", "del", `${this.prefix}r`));
    quietly(() => ip("netns", "del", this.sw));
    this.hosts.clear();
  }
}

/** Namespaces and links left by a run that was killed before it could clean up (its pid is gone). */
function removeStale(): void {
  const alive = (pid: number) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === "EPERM";
    }
  };
  const names = (args: string[]) => execFileSync("ip", args, { encoding: "utf8" }).split("\n");
  for (const line of names(["netns", "list"])) {
    const m = /^(th(\d+)\w+)/.exec(line);
    if (m && !alive(Number(m[2]))) quietly(() => ip("netns", "del", m[1]));
  }
  for (const line of names(["-o", "link", "show"])) {
    const m = /^\d+: (th(\d+)r)[@:]/.exec(line);
    if (m && !alive(Number(m[2]))) quietly(() => ip("link", "del", m[1]));
  }
}

function ip(...args: string[]): void {
  execFileSync("ip", args, { stdio: ["ignore", "ignore", "pipe"] });
}

function quietly(f: () => void): void {
  try {
    f();
  } catch {
    // already gone
  }
}
