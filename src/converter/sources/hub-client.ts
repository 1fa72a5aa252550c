// The few Hugging Face Hub calls a conversion needs: the file listing of a revision, small files,
// and resumable downloads of large ones (HTTP Range into a .part file, verified against the
// Hub's size and SHA-256). Redirects are followed by hand so the Hub's own headers (resolved
// commit, LFS digest) are seen and the token is never sent to another origin.
import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError } from "@connectrpc/connect";

/** How to reach the Hub. Unset fields come from HF_ENDPOINT / HF_TOKEN / XDG_CACHE_HOME. */
export interface HubSettings {
  /** Base URL (default HF_ENDPOINT, else https://huggingface.co). */
  endpoint?: string;
  /** Access token sent as Bearer (default HF_TOKEN). */
  token?: string;
  /** Download cache (default $XDG_CACHE_HOME/thaw/hub, else ~/.cache/thaw/hub). */
  cacheDir?: string;
  /** fetch implementation (default globalThis.fetch). */
  fetch?: typeof fetch;
  /** Retries after a connection failure, 429 or 5xx before giving up (default 2; progress resets the count). */
  retries?: number;
  /** First retry delay in ms, doubled each time (default 1000). */
  retryDelayMs?: number;
  /** A download that receives nothing for this long is retried (default 60 000 ms). */
  idleTimeoutMs?: number;
}

/** A file of a Hub revision. */
export interface HubFile {
  name: string;
  size?: number;
  /** SHA-256 of an LFS file, when the Hub reported it. */
  sha256?: string;
}

/** The files of a revision, and the commit it resolved to. */
export interface HubListing {
  sha: string;
  files: HubFile[];
}

/** What a download produced. */
export interface DownloadResult {
  size: number;
  sha256: string;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const SMALL_FILE_LIMIT = 64 << 20;
// ≤ 1 MiB per write() (see LocalStore: larger buffered writes are expensive on our VMs)
const WRITE_BATCH = 1 << 20;

/** Settings with every default filled in. */
export function resolveHubSettings(settings: HubSettings = {}): Required<Omit<HubSettings, "token">> & { token?: string } {
  const env = process.env;
  const cacheHome = env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache");
  return {
    endpoint: (settings.endpoint ?? env.HF_ENDPOINT ?? "https://huggingface.co").replace(/\/+$/, ""),
    token: settings.token ?? (env.HF_TOKEN || undefined),
    cacheDir: settings.cacheDir ?? path.join(cacheHome, "thaw", "hub"),
    fetch: settings.fetch ?? globalThis.fetch,
    retries: settings.retries ?? 2,
    retryDelayMs: settings.retryDelayMs ?? 1000,
    idleTimeoutMs: settings.idleTimeoutMs ?? 60_000,
  };
}

/** A failure worth another try (connection trouble, 429, 5xx). */
class Transient extends Error {}

export class HubClient {
  private readonly s: ReturnType<typeof resolveHubSettings>;

  constructor(
    settings: HubSettings,
    private readonly signal?: AbortSignal,
  ) {
    this.s = resolveHubSettings(settings);
  }

  get endpoint(): string {
    return this.s.endpoint;
  }

  get cacheDir(): string {
    return this.s.cacheDir;
  }

  /** URL of a repository (for messages and provenance). */
  repoUrl(repo: string): string {
    return `${this.s.endpoint}/${repo}`;
  }

  /** Lists the files of `repo` at `revision`. */
  async list(repo: string, revision: string): Promise<HubListing> {
    const url = `${this.s.endpoint}/api/models/${repo}/revision/${encodeURIComponent(revision)}?blobs=true`;
    const what = `listing ${repo}@${revision} on ${this.s.endpoint}`;
    const body = await this.retrying(what, async () => {
      const { res } = await this.request(url, what);
      return new Uint8Array(await this.readSmall(res, what));
    });
    let json: { sha?: unknown; siblings?: unknown };
    try {
      json = JSON.parse(new TextDecoder().decode(body));
    } catch {
      throw new ConnectError(`${what}: the Hub answered with something that is not JSON`, Code.Unavailable);
    }
    if (!Array.isArray(json.siblings)) throw new ConnectError(`${what}: the answer has no file list (siblings)`, Code.Unavailable);
    const files: HubFile[] = [];
    for (const s of json.siblings as { rfilename?: unknown; size?: unknown; lfs?: { sha256?: unknown } }[]) {
      if (typeof s?.rfilename !== "string") continue;
      files.push({
        name: s.rfilename,
        size: typeof s.size === "number" ? s.size : undefined,
        sha256: typeof s.lfs?.sha256 === "string" ? s.lfs.sha256 : undefined,
      });
    }
    return { sha: typeof json.sha === "string" ? json.sha : "", files };
  }

  /** Fetches a small file (a JSON index) into memory, with the commit the Hub resolved `revision` to (x-repo-commit). */
  async fetchSmall(repo: string, revision: string, file: string): Promise<{ data: Uint8Array; commit?: string }> {
    const what = `downloading ${repo}/${file}@${revision}`;
    return this.retrying(what, async () => {
      const { res, commit } = await this.request(this.resolveUrl(repo, revision, file), what);
      return { data: new Uint8Array(await this.readSmall(res, what)), commit };
    });
  }

  /**
   * Downloads `file` to `dest`, resuming a `dest.part` left by an earlier attempt. Verifies the
   * size and, when the Hub gives one, the SHA-256. Returns the SHA-256 (also kept in dest.sha256).
   */
  async download(
    repo: string,
    revision: string,
    file: string,
    dest: string,
    expect: { size?: number; sha256?: string },
    onBytes?: (n: number) => void,
  ): Promise<DownloadResult> {
    const done = await cachedDownload(dest);
    if (done !== undefined && (expect.size === undefined || expect.size === done.size)) {
      onBytes?.(done.size);
      return done;
    }
    await mkdir(path.dirname(dest), { recursive: true });
    const part = `${dest}.part`;
    const what = `downloading ${repo}/${file}@${revision}`;
    const url = this.resolveUrl(repo, revision, file);
    let have = (await stat(part).catch(() => undefined))?.size ?? 0;
    let hash = await hashFile(part, have);
    if (have > 0) onBytes?.(have);
    let total = expect.size;
    let sha256 = expect.sha256;

    await this.retrying(what, async () => {
      const { res, linkedEtag, linkedSize } = await this.request(url, what, have > 0 ? `bytes=${have}-` : undefined);
      sha256 ??= linkedEtag;
      total ??= linkedSize;
      if (res.status === 416 && have > 0) {
        // Nothing past what we have: either complete or the file changed; let the checks below decide.
        await res.body?.cancel();
        total ??= have;
        return;
      }
      if (res.status === 200 && have > 0) {
        // The server ignored the range: start over.
        onBytes?.(-have);
        have = 0;
        hash = createHash("sha256");
        await rm(part, { force: true });
      } else if (res.status === 206) {
        const range = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get("content-range") ?? "");
        if (range === null || Number(range[1]) !== have) {
          await res.body?.cancel();
          throw new ConnectError(`${what}: the server answered a range request with ${res.headers.get("content-range")}`, Code.Unavailable);
        }
        if (range[3] !== "*") total ??= Number(range[3]);
      }
      if (res.status === 200) total ??= numberHeader(res, "content-length");
      const handle = await open(part, "a");
      let pending: Uint8Array[] = [];
      let pendingBytes = 0;
      const flush = async (): Promise<void> => {
        if (pendingBytes === 0) return;
        const batch = Buffer.concat(pending, pendingBytes);
        pending = [];
        pendingBytes = 0;
        await handle.write(batch);
      };
      try {
        for await (const piece of this.body(res, what)) {
          hash.update(piece);
          pending.push(piece);
          pendingBytes += piece.length;
          have += piece.length;
          onBytes?.(piece.length);
          if (pendingBytes >= WRITE_BATCH) await flush();
        }
        await flush();
      } finally {
        await flush().catch(() => {});
        await handle.close();
      }
      if (total !== undefined && have < total) throw new Transient(`the connection closed after ${have} of ${total} bytes`);
    }, () => have);

    if (total !== undefined && have !== total) {
      await rm(part, { force: true });
      throw new ConnectError(`${what}: got ${have} bytes, the Hub announced ${total}; removed the partial file, try again`, Code.DataLoss);
    }
    const digest = hash.digest("hex");
    if (sha256 !== undefined && digest !== sha256) {
      await rm(part, { force: true });
      throw new ConnectError(`${what}: SHA-256 ${digest} does not match the Hub's ${sha256}; removed the download, try again`, Code.DataLoss);
    }
    await writeFile(`${dest}.sha256`, digest);
    await rename(part, dest);
    return { size: have, sha256: digest };
  }

  private resolveUrl(repo: string, revision: string, file: string): string {
    return `${this.s.endpoint}/${repo}/resolve/${encodeURIComponent(revision)}/${file.split("/").map(encodeURIComponent).join("/")}`;
  }

  /** GET with redirects followed by hand; maps HTTP errors to ConnectErrors (Transient for retryable ones). */
  private async request(
    url: string,
    what: string,
    range?: string,
  ): Promise<{ res: Response; linkedEtag?: string; linkedSize?: number; commit?: string }> {
    const origin = new URL(url).origin;
    let current = url;
    let linkedEtag: string | undefined;
    let linkedSize: number | undefined;
    let commit: string | undefined;
    for (let hop = 0; hop < 8; hop++) {
      const headers: Record<string, string> = { "user-agent": "thaw-converter" };
      if (range !== undefined) headers.range = range;
      if (this.s.token !== undefined && new URL(current).origin === origin) headers.authorization = `Bearer ${this.s.token}`;
      let res: Response;
      try {
        res = await this.s.fetch(current, { headers, redirect: "manual", signal: this.signal });
      } catch (err) {
        this.signal?.throwIfAborted();
        throw new Transient(`cannot reach ${new URL(current).host}: ${describeFetchError(err)}`);
      }
      // The Hub's own headers describe the file even when the bytes come from a CDN.
      linkedEtag ??= sha256Etag(res.headers.get("x-linked-etag") ?? res.headers.get("etag"));
      linkedSize ??= numberHeader(res, "x-linked-size");
      commit ??= res.headers.get("x-repo-commit") ?? undefined;
      if (REDIRECTS.has(res.status)) {
        const location = res.headers.get("location");
        await res.body?.cancel();
        if (location === null) throw new ConnectError(`${what}: redirect without a location`, Code.Unavailable);
        current = new URL(location, current).href;
        continue;
      }
      if (res.ok || res.status === 416) return { res, linkedEtag, linkedSize, commit };
      const detail = res.headers.get("x-error-message");
      await res.body?.cancel();
      throw this.statusError(res.status, what, detail);
    }
    throw new ConnectError(`${what}: too many redirects`, Code.Unavailable);
  }

  private statusError(status: number, what: string, detail: string | null): Error {
    const hint = detail ? ` (${detail})` : "";
    switch (status) {
      case 401:
        return new ConnectError(
          this.s.token === undefined
            ? `${what}: the Hub wants authentication${hint}; the repository is private, gated or does not exist — set HF_TOKEN`
            : `${what}: the Hub rejected the token in HF_TOKEN${hint}`,
          Code.Unauthenticated,
        );
      case 403:
        return new ConnectError(
          `${what}: access denied${hint}; for a gated model, accept its terms on the Hub with the account whose token is in HF_TOKEN`,
          Code.PermissionDenied,
        );
      case 404:
        return new ConnectError(`${what}: not found${hint}; check the repository id, revision and file name`, Code.NotFound);
      case 400:
        return new ConnectError(`${what}: the Hub refused the request${hint}`, Code.InvalidArgument);
      case 408:
      case 429:
        return new Transient(`HTTP ${status}${hint}`);
      default:
        return status >= 500 ? new Transient(`HTTP ${status}${hint}`) : new ConnectError(`${what}: HTTP ${status}${hint}`, Code.Unknown);
    }
  }

  /**
   * Runs `attempt`, retrying Transient failures with backoff; Unavailable when they persist. An
   * attempt that moved `progress` forward resets the count, so a long download survives many cuts.
   */
  private async retrying<T>(what: string, attempt: () => Promise<T>, progress?: () => number): Promise<T> {
    let failures = 0;
    let mark = progress?.();
    for (;;) {
      try {
        return await attempt();
      } catch (err) {
        this.signal?.throwIfAborted();
        if (!(err instanceof Transient)) throw err;
        if (progress !== undefined && progress() !== mark) {
          mark = progress();
          failures = 0;
        }
        if (failures >= this.s.retries) {
          throw new ConnectError(
            `${what}: ${err.message}; gave up after ${failures + 1} attempts (run again to resume)`,
            Code.Unavailable,
          );
        }
        await sleep(this.s.retryDelayMs * 2 ** failures, undefined, { signal: this.signal });
        failures++;
      }
    }
  }

  /** The body, piece by piece; a stall longer than idleTimeoutMs or a cut connection is Transient. */
  private async *body(res: Response, what: string): AsyncIterable<Uint8Array> {
    if (res.body === null) return;
    const reader = res.body.getReader();
    let timer: NodeJS.Timeout | undefined;
    try {
      for (;;) {
        const stalled = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Transient(`no data for ${this.s.idleTimeoutMs} ms`)), this.s.idleTimeoutMs);
        });
        let step: Awaited<ReturnType<typeof reader.read>>;
        try {
          step = await Promise.race([reader.read(), stalled]);
        } catch (err) {
          this.signal?.throwIfAborted();
          if (err instanceof Transient) throw err;
          throw new Transient(`${what}: connection lost: ${describeFetchError(err)}`);
        } finally {
          clearTimeout(timer);
        }
        if (step.done) return;
        yield step.value;
      }
    } finally {
      await reader.cancel().catch(() => {});
    }
  }

  private async readSmall(res: Response, what: string): Promise<Buffer> {
    const parts: Uint8Array[] = [];
    let size = 0;
    for await (const piece of this.body(res, what)) {
      size += piece.length;
      if (size > SMALL_FILE_LIMIT) throw new ConnectError(`${what}: larger than ${SMALL_FILE_LIMIT} bytes`, Code.InvalidArgument);
      parts.push(piece);
    }
    return Buffer.concat(parts);
  }
}

/** A finished download in the cache (file plus its .sha256), or undefined. */
async function cachedDownload(dest: string): Promise<DownloadResult | undefined> {
  try {
    const [info, sha256] = await Promise.all([stat(dest), readFile(`${dest}.sha256`, "utf8")]);
    return /^[0-9a-f]{64}$/.test(sha256) ? { size: info.size, sha256 } : undefined;
  } catch {
    return undefined;
  }
}

/** SHA-256 state over the first `length` bytes of `file` (to continue hashing a resumed download). */
async function hashFile(file: string, length: number): Promise<Hash> {
  const hash = createHash("sha256");
  if (length === 0) return hash;
  for await (const piece of createReadStream(file, { start: 0, end: length - 1, highWaterMark: 1 << 20 })) hash.update(piece as Buffer);
  return hash;
}

function sha256Etag(etag: string | null): string | undefined {
  const value = etag?.replace(/^W\//, "").replace(/"/g, "");
  return value !== undefined && /^[0-9a-f]{64}$/.test(value) ? value : undefined;
}

function numberHeader(res: Response, name: string): number | undefined {
  const value = res.headers.get(name);
  return value !== null && /^\d+$/.test(value) ? Number(value) : undefined;
}

function describeFetchError(err: unknown): string {
  const e = err as Error & { cause?: { code?: string; message?: string } };
  return e.cause?.code ?? e.cause?.message ?? e.message ?? String(err);
}
