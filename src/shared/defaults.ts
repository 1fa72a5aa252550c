// Defaults shared by every process, each overridable by flag or environment.

/** Where state lives when nothing else is configured: ./.thaw (store, caches, agent tiers). */
export const STATE_DIR = process.env.THAW_HOME ?? ".thaw";

/** The checkpoint store: a folder or an s3:// / az:// URL (THAW_STORE). */
export const DEFAULT_STORE = process.env.THAW_STORE ?? `${STATE_DIR}/store`;

/** Interface internal services bind to: loopback unless an operator opens it up. */
export const DEFAULT_HOST = process.env.THAW_HOST ?? "127.0.0.1";

/** Shared secret of thaw's own processes (THAW_INTERNAL_TOKEN); required to bind beyond loopback. */
export const INTERNAL_TOKEN = process.env.THAW_INTERNAL_TOKEN || undefined;

/** The operators' secret (THAW_ADMIN_TOKEN): model registry, placement, unload, delete, launch. */
export const ADMIN_TOKEN = process.env.THAW_ADMIN_TOKEN || undefined;

/** Where thaw serve and thaw orchestrator keep a generated admin token, and operator commands look for it. */
export const ADMIN_TOKEN_FILE = "admin-token";

export const PORTS = {
  edge: 8000,
  converter: 50061,
  agent: 50071,
} as const;
