// A Hugging Face model folder on local disk, confined to the converter's allowed roots. Paths are
// resolved through symlinks before the check, so a link cannot lead outside the roots.
import { readdir, readFile, realpath, stat } from "node:fs/promises";
import path from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { type ShardIndex, chooseWeightFiles, parseShardIndex, sideFileNames } from "./repo-files.js";
import type { ResolvedSource, SourceFileRef } from "./resolved-source.js";

/** Resolves `folder` (absolute, or relative to the working directory) into the files to convert. */
export async function resolveLocalFolder(folder: string, roots?: readonly string[], revision = "main"): Promise<ResolvedSource> {
  if (folder.includes("\0")) throw new ConnectError("source path contains a NUL byte", Code.InvalidArgument);
  const allowed =
    roots === undefined
      ? undefined
      : [...new Set((await Promise.all(roots.map(async (r) => [path.resolve(r), await realpath(r).catch(() => path.resolve(r))]))).flat())];
  const confine = (p: string, what: string): void => {
    if (allowed !== undefined && !allowed.some((r) => isInside(r, p))) {
      throw new ConnectError(
        `${what} is outside the folders this converter may read (${allowed.join(", ") || "none configured"})`,
        Code.PermissionDenied,
      );
    }
  };
  // Lexically first, so nothing outside the roots is even looked at; again once links are resolved.
  confine(path.resolve(folder), `source folder ${folder}`);
  const real = await realpathOrThrow(path.resolve(folder), folder);
  confine(real, `source folder ${folder}`);
  if (!(await stat(real)).isDirectory()) throw new ConnectError(`source ${folder} is not a folder`, Code.InvalidArgument);

  const names: string[] = [];
  for (const entry of await readdir(real, { withFileTypes: true })) {
    if (entry.isFile()) names.push(entry.name);
    else if (entry.isSymbolicLink() && (await stat(path.join(real, entry.name)).catch(() => undefined))?.isFile()) names.push(entry.name);
  }
  names.sort();
  const layout = chooseWeightFiles(names, `folder ${folder}`);

  const fileRef = async (name: string, role: string): Promise<SourceFileRef> => {
    const p = await realpathOrThrow(path.join(real, name), `${folder}/${name}`, role);
    confine(p, `${role} ${name} (a link to ${p})`);
    return { name, path: p, size: (await stat(p)).size, sha256: "" };
  };

  let shardIndex: ShardIndex | undefined;
  let weightNames: string[];
  if (layout.kind === "indexed") {
    const indexRef = await fileRef(layout.indexFile, "shard index");
    shardIndex = parseShardIndex(await readFile(indexRef.path), `${folder}/${layout.indexFile}`);
    weightNames = shardIndex.files;
    for (const shard of weightNames) {
      if (!names.includes(shard)) {
        throw new ConnectError(`${folder}/${layout.indexFile} names shard ${shard}, which is not in the folder`, Code.InvalidArgument);
      }
    }
  } else {
    weightNames = layout.files;
  }
  const weightFiles = await Promise.all(weightNames.map((n) => fileRef(n, "weight file")));
  const sideFiles = await Promise.all(sideFileNames(names).map((n) => fileRef(n, "side file")));
  return { location: real, revision, weightFiles, shardIndex, sideFiles };
}

function isInside(root: string, p: string): boolean {
  const rel = path.relative(root, p);
  return rel === "" || (!rel.startsWith("..") && !path.isAbsolute(rel));
}

async function realpathOrThrow(p: string, shown: string, role = "source folder"): Promise<string> {
  try {
    return await realpath(p);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") throw new ConnectError(`${role} ${shown} does not exist`, Code.NotFound);
    if (code === "EACCES" || code === "EPERM") throw new ConnectError(`${role} ${shown} is not readable by the converter`, Code.PermissionDenied);
    throw err;
  }
}
