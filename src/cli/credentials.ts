// The credentials of the `thaw` commands (src/shared/auth.ts says what each grants):
//   --internal-token / THAW_INTERNAL_TOKEN   thaw's own processes; thaw serve makes one if none is given
//   --admin-token / THAW_ADMIN_TOKEN         operators; thaw serve and thaw orchestrator make one if none
//                                            is given and keep it in <state-dir>/admin-token (mode 0600),
//                                            where the operator commands find it
import { randomBytes } from "node:crypto";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import path from "node:path";
import { newToken } from "../shared/auth.js";
import { ADMIN_TOKEN, ADMIN_TOKEN_FILE, INTERNAL_TOKEN, STATE_DIR } from "../shared/defaults.js";

export const TOKEN_OPTIONS = {
  "internal-token": { type: "string" },
  "admin-token": { type: "string" },
} as const;

export const TOKEN_USAGE = `  --internal-token TOKEN      secret shared by every thaw process (default THAW_INTERNAL_TOKEN; prefer the
                              variable: flags show in ps); required to listen beyond loopback
  --admin-token TOKEN         the operators' secret (default THAW_ADMIN_TOKEN)`;

/** The internal token from the flag or THAW_INTERNAL_TOKEN. */
export function internalToken(values: { "internal-token"?: string }): string | undefined {
  return values["internal-token"] || INTERNAL_TOKEN;
}

/** The admin token a server accepts: the flag, THAW_ADMIN_TOKEN, else the one kept in the state folder (made on first start). */
export async function serverAdminToken(values: { "admin-token"?: string }, stateDir: string): Promise<{ token: string; file?: string }> {
  const given = values["admin-token"] || ADMIN_TOKEN;
  if (given) return { token: given };
  const file = path.resolve(stateDir, ADMIN_TOKEN_FILE);
  const kept = await readToken(file);
  if (kept !== undefined) return { token: kept, file };
  await mkdir(path.dirname(file), { recursive: true });
  const token = newToken();
  // Written whole and readable by its owner only, then moved into place.
  const temporary = `${file}.${randomBytes(4).toString("hex")}.tmp`;
  await writeFile(temporary, token + "\n", { mode: 0o600, flag: "wx" });
  await rename(temporary, file);
  return { token, file };
}

/** The admin token an operator command sends: the flag, THAW_ADMIN_TOKEN, else the one kept in <THAW_HOME>/admin-token. */
export async function clientAdminToken(values: { "admin-token"?: string }, stateDir = STATE_DIR): Promise<string | undefined> {
  return values["admin-token"] || ADMIN_TOKEN || (await readToken(path.resolve(stateDir, ADMIN_TOKEN_FILE)));
}

async function readToken(file: string): Promise<string | undefined> {
  try {
    const token = (await readFile(file, "utf8")).trim();
    return token === "" ? undefined : token;
  } catch {
    return undefined;
  }
}
