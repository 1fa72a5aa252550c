// Resolves when a server command should stop: on the first SIGINT or SIGTERM, or on the first
// error nothing caught (an uncaught exception, an unhandled rejection). Such an error no longer
// kills the process mid-way: the command shuts down as for a signal (running requests end with an
// error event), says why, and exits with status 1, so a supervisor (systemd, Docker's restart
// policy, Kubernetes) starts it again.
export type StopReason = { signal: NodeJS.Signals; fatal?: undefined } | { fatal: Error; signal?: undefined };

export function untilStopped(): Promise<StopReason> {
  return new Promise((resolve) => {
    const done = (reason: StopReason) => {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
      process.off("uncaughtException", onError);
      process.off("unhandledRejection", onError);
      // Anything that fails while shutting down is reported, not fatal a second time.
      process.on("uncaughtException", report);
      process.on("unhandledRejection", report);
      resolve(reason);
    };
    const onSignal = (signal: NodeJS.Signals) => done({ signal });
    const onError = (err: unknown) => {
      process.exitCode = 1;
      done({ fatal: err instanceof Error ? err : new Error(String(err)) });
    };
    const report = (err: unknown) => process.stderr.write(`while shutting down: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    process.on("uncaughtException", onError);
    process.on("unhandledRejection", onError);
  });
}

/** The line a command prints when it stops: the signal, or the error and the exit status. */
export function stopLine(command: string, reason: StopReason, after: string): string {
  if (reason.fatal === undefined) return `${command}: ${reason.signal}: ${after}\n`;
  return `${command}: fatal: ${reason.fatal.stack ?? reason.fatal.message}\n${command}: ${after}; then exiting with status 1 (a supervisor may start it again)\n`;
}

/** After a fatal error, the process exits even if something it closes hangs. */
export function exitAfter(reason: StopReason, ms: number): void {
  if (reason.fatal !== undefined) setTimeout(() => process.exit(1), ms).unref();
}
