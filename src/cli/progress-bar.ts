// Renders conversion progress on stderr: a redrawn bar on a terminal, a line per phase otherwise.
import { ConvertPhase } from "../gen/thaw/converter/v1/converter_service_pb.js";
import type { ConvertProgress } from "../converter/converter-service.js";

const PHASE_NAMES: Record<ConvertPhase, string> = {
  [ConvertPhase.UNSPECIFIED]: "starting",
  [ConvertPhase.RESOLVING]: "resolving",
  [ConvertPhase.DOWNLOADING]: "downloading",
  [ConvertPhase.WRITING]: "writing",
  [ConvertPhase.PUBLISHING]: "publishing",
  [ConvertPhase.DONE]: "done",
};

export class ProgressBar {
  private lastPhase: ConvertPhase | undefined;
  private lastDraw = 0;
  private phaseStart = Date.now();

  constructor(private readonly out: NodeJS.WriteStream = process.stderr) {}

  update(p: ConvertProgress): void {
    const tty = this.out.isTTY === true;
    const now = Date.now();
    if (p.phase !== this.lastPhase) {
      if (tty && this.lastPhase !== undefined) this.out.write("\n");
      this.lastPhase = p.phase;
      this.phaseStart = now;
      if (!tty) this.out.write(`${PHASE_NAMES[p.phase]}${p.message ? `: ${p.message}` : ""}\n`);
    }
    if (!tty || now - this.lastDraw < 100) return;
    this.lastDraw = now;
    const done = Number(p.bytesDone);
    const total = Number(p.bytesTotal);
    const fraction = total > 0 ? Math.min(1, done / total) : 0;
    const width = 30;
    const filled = Math.round(fraction * width);
    const seconds = (now - this.phaseStart) / 1000;
    const rate = seconds > 0 ? done / seconds : 0;
    const line =
      `${PHASE_NAMES[p.phase].padEnd(11)} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ` +
      `${(fraction * 100).toFixed(0).padStart(3)}% ${gb(done)}/${gb(total)} GB ${gb(rate)} GB/s` +
      (p.tensorsTotal > 0 ? ` tensors ${p.tensorsDone}/${p.tensorsTotal}` : "");
    this.out.write(`\r${line}\x1b[K`);
  }

  finish(): void {
    if (this.out.isTTY === true && this.lastPhase !== undefined) this.out.write("\n");
  }
}

function gb(bytes: number): string {
  return (bytes / 1e9).toFixed(2);
}
