// Workloads: streams of requests (arrival time, model, prompt and output tokens), produced lazily
// in time order so a year of them never sits in memory.
//   azure      the Azure LLM inference trace 2023 (Patel et al., "Splitwise: Efficient generative
//              LLM inference using phase splitting", ISCA 2024; Azure Public Dataset, CC-BY 4.0):
//              its arrival times and token counts, models assigned by Zipf popularity
//   bursty     Poisson background plus bursts: a burst picks one model (Zipf) and sends it a
//              geometric number of requests within seconds — how serverless traffic arrives
//   diurnal    a daily cycle (peak 1.6×, trough 0.4× the mean) with the bursts on top, for long runs
// Token counts of the synthetic workloads are drawn from the trace's conversation requests.
import { readFileSync } from "node:fs";
import { mulberry32 } from "../../src/shared/prng.js";

export interface Request {
  atMs: number;
  model: number;
  promptTokens: number;
  outputTokens: number;
}

/** The shared seeded generator: the same workload for every policy. */
export const rng = mulberry32;

/** Model ranks 0..n-1 drawn with probability ∝ 1/(rank+1)^s. */
export function zipf(n: number, s: number, random: () => number): () => number {
  const cdf = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) cdf[i] = sum += 1 / Math.pow(i + 1, s);
  return () => {
    const x = random() * sum;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid] < x) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
}

export interface TraceRow {
  offsetMs: number;
  promptTokens: number;
  outputTokens: number;
}

/** Rows of an Azure LLM trace CSV (TIMESTAMP,ContextTokens,GeneratedTokens), offsets from the first. */
export function readAzureTrace(file: string): TraceRow[] {
  const lines = readFileSync(file, "utf8").trim().split("\n").slice(1);
  const rows = lines.map((line) => {
    const [ts, ctx, gen] = line.split(",");
    // "2023-11-16 18:17:03.9799600": seven fractional digits, read as milliseconds.
    const [date, time] = ts.split(" ");
    const [hms, frac = "0"] = time.split(".");
    const ms = Date.parse(`${date}T${hms}Z`) + Number(`0.${frac}`) * 1000;
    return { offsetMs: ms, promptTokens: Number(ctx), outputTokens: Math.max(1, Number(gen)) };
  });
  rows.sort((a, b) => a.offsetMs - b.offsetMs);
  const t0 = rows[0].offsetMs;
  for (const r of rows) r.offsetMs -= t0;
  return rows;
}

export interface ModelChoice {
  models: number;
  zipfS: number;
  seed: number;
}

/** The trace's requests, `rate` times as dense (arrival times divided by it), models by Zipf. */
export function* azure(rows: TraceRow[], rate: number, choice: ModelChoice): Generator<Request> {
  const random = rng(choice.seed);
  const pick = zipf(choice.models, choice.zipfS, random);
  for (const r of rows) yield { atMs: r.offsetMs / rate, model: pick(), promptTokens: r.promptTokens, outputTokens: r.outputTokens };
}

export interface BurstyOptions extends ModelChoice {
  durationMs: number;
  /** Background requests per second (Poisson, models by Zipf). */
  backgroundRate: number;
  /** Bursts per second, and mean requests in one (geometric), spread over `burstSpanMs`. */
  burstRate: number;
  burstSize: number;
  burstSpanMs: number;
  /** Daily cycle of both rates (0: none; 0.6: peak 1.6×, trough 0.4×). */
  diurnal: number;
  /** Token counts are drawn from these rows. */
  tokens: TraceRow[];
}

/** Background Poisson arrivals plus bursts of one model each, merged in time order. */
export function* bursty(o: BurstyOptions): Generator<Request> {
  const random = rng(o.seed);
  const pick = zipf(o.models, o.zipfS, random);
  const day = 86_400_000;
  // Thinning: candidates at the peak rate, kept with probability rate(t)/peak.
  const keep = (t: number) => (1 + o.diurnal * Math.sin((2 * Math.PI * t) / day)) / (1 + o.diurnal);
  const exp = (rate: number) => (-Math.log(1 - random()) / rate) * 1000;
  const peak = (rate: number) => rate * (1 + o.diurnal);
  const tokens = () => o.tokens[Math.floor(random() * o.tokens.length)];
  const pending: Request[] = []; // burst requests not yet due, kept sorted
  let background = exp(peak(o.backgroundRate));
  let burst = o.burstRate > 0 ? exp(peak(o.burstRate)) : Infinity;
  for (;;) {
    const next = Math.min(background, burst, pending.length > 0 ? pending[0].atMs : Infinity);
    if (next >= o.durationMs) {
      return;
    } else if (pending.length > 0 && pending[0].atMs === next) {
      yield pending.shift()!;
    } else if (background === next) {
      if (random() < keep(next)) {
        const t = tokens();
        yield { atMs: next, model: pick(), promptTokens: t.promptTokens, outputTokens: t.outputTokens };
      }
      background += exp(peak(o.backgroundRate));
    } else {
      if (random() < keep(next)) {
        const model = pick();
        const size = 1 + Math.floor(Math.log(1 - random()) / Math.log(1 - 1 / o.burstSize));
        for (let i = 0; i < size; i++) {
          const t = tokens();
          pending.push({ atMs: next + random() * o.burstSpanMs, model, promptTokens: t.promptTokens, outputTokens: t.outputTokens });
        }
        pending.sort((a, b) => a.atMs - b.atMs);
      }
      burst += exp(peak(o.burstRate));
    }
  }
}
