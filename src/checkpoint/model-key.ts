// Model keys: a model id and a revision made into one path-safe folder name ("org--name@rev"),
// plus the validator for file names that arrive from an index or a request. Everything that
// becomes a path in a store passes through here, so nothing can leave the store root.
import { Code, ConnectError } from "@connectrpc/connect";

/** Revision used when none is given. */
export const DEFAULT_REVISION = "main";

// A model id is "name" or "org/name" as on the Hugging Face Hub: letters, digits, '_', '-', '.',
// not starting or ending with '-' or '.', no "--" or ".." (so "org--name" maps back uniquely).
const ID_PART = /^[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?$/;
// A revision is a branch, tag or commit without separators.
const REVISION = /^[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9_])?$/;
// File names inside a checkpoint folder: one plain component, not hidden.
const FILE_NAME = /^[A-Za-z0-9_][A-Za-z0-9._+-]{0,199}$/;

function invalid(message: string): ConnectError {
  return new ConnectError(message, Code.InvalidArgument);
}

function describe(value: string): string {
  return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);
}

/** Throws InvalidArgument unless `modelId` is "name" or "org/name" in the Hub's alphabet. */
export function checkModelId(modelId: string): void {
  const parts = modelId.split("/");
  const ok =
    modelId.length > 0 &&
    parts.length <= 2 &&
    parts.every((p) => ID_PART.test(p) && !p.includes("--") && !p.includes(".."));
  if (!ok) {
    throw invalid(
      `invalid model id ${describe(modelId)}: use "name" or "org/name" with letters, digits, '_', '-', '.' ` +
        `(no "--" or "..", no leading or trailing '-' or '.')`,
    );
  }
}

/** Throws InvalidArgument unless `revision` is a branch, tag or commit name without separators. */
export function checkRevision(revision: string): void {
  if (!REVISION.test(revision) || revision.includes("..")) {
    throw invalid(
      `invalid revision ${describe(revision)}: use a branch, tag or commit of letters, digits, '_', '-', '.' (no '/')`,
    );
  }
}

/** The store folder name of a model at a revision (empty revision: "main"). */
export function modelKey(modelId: string, revision = ""): string {
  const rev = revision === "" ? DEFAULT_REVISION : revision;
  checkModelId(modelId);
  checkRevision(rev);
  return `${modelId.replace("/", "--")}@${rev}`;
}

/** Splits a model key back into model id and revision; throws InvalidArgument for anything else. */
export function parseModelKey(key: string): { modelId: string; revision: string } {
  const at = key.indexOf("@");
  if (at <= 0 || key.indexOf("@", at + 1) !== -1) {
    throw invalid(`invalid model key ${describe(key)}: expected "org--name@revision"`);
  }
  const modelId = key.slice(0, at).replace("--", "/");
  const revision = key.slice(at + 1);
  let again: string;
  try {
    again = modelKey(modelId, revision);
  } catch (err) {
    throw invalid(`invalid model key ${describe(key)}: ${(err as ConnectError).rawMessage}`);
  }
  if (again !== key) throw invalid(`invalid model key ${describe(key)}: expected "org--name@revision"`);
  return { modelId, revision };
}

/** Throws InvalidArgument unless `key` is exactly what modelKey() produces. */
export function checkModelKey(key: string): void {
  parseModelKey(key);
}

/**
 * Throws InvalidArgument unless `name` is a plain file name (chunk or side file) that stays inside
 * its checkpoint folder: one component, no separators, NUL, "." or "..", not hidden.
 */
export function checkFileName(name: string): void {
  if (!FILE_NAME.test(name) || name.includes("..")) {
    throw invalid(
      `invalid file name ${describe(name)}: expected one plain component of letters, digits, '.', '_', '+', '-'`,
    );
  }
}
