// A model on the Hugging Face Hub: list the revision, decide what to read (refusing pickle-only
// repositories before downloading anything), then download weights and side files into the cache
// under the resolved commit, so every file comes from the same commit and a rerun resumes.
import path from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { checkFileName, checkModelId, checkRevision } from "../../checkpoint/model-key.js";
import { HubClient, type HubFile, type HubSettings } from "./hub-client.js";
import { type ShardIndex, chooseWeightFiles, parseShardIndex, sideFileNames } from "./repo-files.js";
import type { ResolvedSource, SourceFileRef } from "./resolved-source.js";

/** Download progress: files and bytes finished out of the totals (bytes_total 0 when unknown). */
export interface DownloadProgress {
  filesDone: number;
  filesTotal: number;
  bytesDone: number;
  bytesTotal: number;
  file: string;
}

/** Options of resolveHubSource. */
export interface HubSourceOptions {
  hub?: HubSettings;
  signal?: AbortSignal;
  /** Called when the listing is done and the downloads begin. */
  onListed?: (filesTotal: number, bytesTotal: number) => void;
  onProgress?: (progress: DownloadProgress) => void;
}

/** The folder in the cache holding the files of `repo` at `revision`. */
export function hubCacheFolder(cacheDir: string, repo: string, revision: string): string {
  return path.join(cacheDir, repo.replace("/", "--"), revision);
}

/** Lists, checks and downloads `repo` at `revision`; returns local paths in the cache. */
export async function resolveHubSource(repo: string, revision: string, options: HubSourceOptions = {}): Promise<ResolvedSource & { cacheFolder: string }> {
  checkModelId(repo);
  checkRevision(revision);
  const client = new HubClient(options.hub ?? {}, options.signal);
  const listing = await client.list(repo, revision);
  const location = `${repo}@${revision} on ${client.endpoint}`;
  const top = new Map<string, HubFile>();
  for (const f of listing.files) if (!f.name.includes("/")) top.set(f.name, f);
  const layout = chooseWeightFiles([...top.keys()].sort(), location);
  // Pin every download to one commit: the listing's, else the one config.json resolves to.
  let commit = listing.sha;
  if (commit === "") commit = (await client.fetchSmall(repo, revision, "config.json")).commit ?? revision;
  checkRevision(commit);
  const folder = hubCacheFolder(client.cacheDir, repo, commit);

  let shardIndex: ShardIndex | undefined;
  let weightNames: string[];
  if (layout.kind === "indexed") {
    shardIndex = parseShardIndex((await client.fetchSmall(repo, commit, layout.indexFile)).data, `${repo}/${layout.indexFile}`);
    weightNames = shardIndex.files;
    for (const shard of weightNames) {
      if (!top.has(shard)) throw new ConnectError(`${repo}/${layout.indexFile} names shard ${shard}, which the repository does not have`, Code.InvalidArgument);
    }
  } else {
    weightNames = layout.files;
  }
  const sideNames = sideFileNames([...top.keys()]);
  for (const name of [...weightNames, ...sideNames]) checkFileName(name);

  // config.json first: cheap, and a broken one should fail before gigabytes move.
  const order = [...sideNames, ...weightNames];
  const filesTotal = order.length;
  const bytesTotal = order.every((n) => top.get(n)?.size !== undefined) ? order.reduce((a, n) => a + (top.get(n)!.size ?? 0), 0) : 0;
  options.onListed?.(filesTotal, bytesTotal);
  const progress: DownloadProgress = { filesDone: 0, filesTotal, bytesDone: 0, bytesTotal, file: "" };
  const refs = new Map<string, SourceFileRef>();
  for (const name of order) {
    options.signal?.throwIfAborted();
    const dest = path.join(folder, name);
    progress.file = name;
    const info = top.get(name)!;
    const result = await client.download(repo, commit, name, dest, { size: info.size, sha256: info.sha256 }, (n) => {
      progress.bytesDone += n;
      options.onProgress?.({ ...progress });
    });
    refs.set(name, { name, path: dest, size: result.size, sha256: result.sha256 });
    progress.filesDone++;
    options.onProgress?.({ ...progress });
  }
  return {
    location: client.repoUrl(repo),
    revision: commit,
    weightFiles: weightNames.map((n) => refs.get(n)!),
    shardIndex,
    sideFiles: sideNames.map((n) => refs.get(n)!),
    cacheFolder: folder,
  };
}
