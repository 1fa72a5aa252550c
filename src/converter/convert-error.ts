// Every failure of a conversion leaves as a ConnectError with a real code and a message the user
// can act on; file-system errors are translated here.
import { Code, ConnectError } from "@connectrpc/connect";

/** Translates `err` (thrown while converting `what`) into a ConnectError. */
export function toConvertError(err: unknown, what: string, signal?: AbortSignal): ConnectError {
  if (signal?.aborted || (err as Error | undefined)?.name === "AbortError") {
    return new ConnectError(`conversion of ${what} was cancelled`, Code.Canceled);
  }
  if (err instanceof ConnectError) return err;
  const e = err as NodeJS.ErrnoException;
  const where = e.path ? ` (${e.path})` : "";
  switch (e.code) {
    case "ENOENT":
    case "ENOTDIR":
      return new ConnectError(`converting ${what}: no such file or folder${where}`, Code.NotFound, undefined, undefined, err);
    case "EACCES":
    case "EPERM":
      return new ConnectError(`converting ${what}: permission denied${where}`, Code.PermissionDenied, undefined, undefined, err);
    case "ENOSPC":
    case "EDQUOT":
      return new ConnectError(`converting ${what}: the disk is full${where}`, Code.ResourceExhausted, undefined, undefined, err);
    case "EISDIR":
      return new ConnectError(`converting ${what}: expected a file, found a folder${where}`, Code.InvalidArgument, undefined, undefined, err);
    default:
      return ConnectError.from(err, Code.Internal);
  }
}
