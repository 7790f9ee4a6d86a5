// The dashboard's serve view: reads `moe serve`'s /metrics (Prometheus text format) and sums it up as expert load and expert-cache counts per layer.
//
// Hand-written: the view needs only the sample lines (`name{label="value",...} number`) of the
// text exposition format 0.0.4; comments (# HELP, # TYPE), timestamps and histograms' own lines are
// read or skipped by the same rule. The npm parsers of this format (parse-prometheus-text-format
// and kin) are unmaintained for years, and prom-client only writes the format.

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;

function parseValue(s: string): number {
  if (s === '+Inf' || s === 'Inf') return Infinity;
  if (s === '-Inf') return -Infinity;
  if (s === 'NaN') return NaN;
  const v = Number(s);
  if (s === '' || Number.isNaN(v)) throw new Error(`'${s}' is not a number`);
  return v;
}

/** Parses the samples of a Prometheus text exposition; throws naming the line that is malformed. */
export function parsePrometheus(text: string): Sample[] {
  const out: Sample[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const fail = (what: string): never => { throw new Error(`metrics line ${i + 1}: ${what}: ${line.slice(0, 120)}`); };
    const m = NAME.exec(line);
    if (!m) fail('expected a metric name');
    const name = m![0];
    let pos = name.length;
    const labels: Record<string, string> = {};
    if (line[pos] === '{') {
      pos++;
      for (;;) {
        while (line[pos] === ' ' || line[pos] === ',') pos++;
        if (line[pos] === '}') { pos++; break; }
        const k = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(line.slice(pos));
        if (!k || line[pos + k[0].length] !== '=' || line[pos + k[0].length + 1] !== '"') fail('expected label="value"');
        pos += k![0].length + 2;
        let v = '';
        for (;;) {
          const c = line[pos++];
          if (c === undefined) fail('unterminated label value');
          if (c === '"') break;
          if (c === '\\') {
            const e = line[pos++];
            v += e === 'n' ? '\n' : e ?? '';
          } else v += c;
        }
        labels[k![0]] = v;
      }
    }
    const rest = line.slice(pos).trim().split(/\s+/);
    let value = 0;
    try {
      value = parseValue(rest[0] ?? '');
    } catch (e) {
      fail((e as Error).message);
    }
    out.push({ name, labels, value });
  });
  return out;
}

export interface ServeSummary {
  /** Per MoE layer (the `layer` label), tokens routed to each expert since the server started (index = expert). */
  expertTokens: Record<string, number[]>;
  /** Per MoE layer, cumulative expert-cache hits and misses (absent without --expert-memory). */
  cache: Record<string, { hits: number; misses: number }>;
  generationTokens: number | null;
  runningSequences: number | null;
  queueDepth: number | null;
  /** Metrics the view would show but the server did not expose (say so on the page). */
  missing: string[];
}

/** The view's numbers from the samples of moe serve's /metrics. */
export function summarise(samples: readonly Sample[]): ServeSummary {
  const expertTokens: Record<string, number[]> = {};
  const cache: Record<string, { hits: number; misses: number }> = {};
  const one = (name: string): number | null => samples.find((s) => s.name === name)?.value ?? null;
  const names = new Set(samples.map((s) => s.name));
  for (const s of samples) {
    const layer = s.labels['layer'];
    if (layer === undefined) continue;
    if (s.name === 'moe_expert_tokens_total') {
      const e = Number(s.labels['expert']);
      if (!Number.isInteger(e) || e < 0) continue;
      const row = (expertTokens[layer] ??= []);
      while (row.length <= e) row.push(0);
      row[e] = s.value;
    } else if (s.name === 'moe_expert_cache_hits_total' || s.name === 'moe_expert_cache_misses_total') {
      const c = (cache[layer] ??= { hits: 0, misses: 0 });
      if (s.name === 'moe_expert_cache_hits_total') c.hits = s.value;
      else c.misses = s.value;
    }
  }
  const missing: string[] = [];
  if (!names.has('moe_expert_tokens_total')) missing.push('moe_expert_tokens_total (no token routed yet, or not an MoE model)');
  if (!names.has('moe_expert_cache_hits_total')) missing.push('moe_expert_cache_hits_total (the server runs without --expert-memory: every expert resident)');
  return {
    expertTokens, cache, generationTokens: one('moe_generation_tokens_total'), runningSequences: one('moe_running_sequences'),
    queueDepth: one('moe_queue_depth'), missing,
  };
}

/** Fetches URL/metrics and sums it up; errors name the URL. */
export async function scrapeServe(base: string, timeoutMs = 3000): Promise<ServeSummary> {
  const url = new URL('/metrics', base).toString();
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  } catch (e) {
    throw new Error(`serve metrics ${url}: ${(e as Error).message}`);
  }
  if (!res.ok) throw new Error(`serve metrics ${url}: HTTP ${res.status}`);
  return summarise(parsePrometheus(await res.text()));
}
