// The store cannot be used at all: its bucket or container is missing, or the service rejected
// the credentials. The message names the URL and what to check, because the operator who reads
// it usually has only the URL and the environment to go on.

/** A store that cannot be reached or used, as opposed to a missing checkpoint (NotFoundError). */
export class StoreAccessError extends Error {
  override readonly name = "StoreAccessError";

  constructor(
    /** The store URL. */
    readonly location: string,
    /** What went wrong, in words. */
    readonly problem: string,
    /** What to check. */
    readonly hint: string,
    options?: { cause?: unknown },
  ) {
    super(`${location}: ${problem}; ${hint}`, options);
  }
}
