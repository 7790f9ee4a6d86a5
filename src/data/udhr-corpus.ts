// A multilingual byte corpus from the UDHR: each language's text cut into contiguous
// train | val | test parts, the parts of all languages joined per split.

import { loadUdhr, encodeBytes } from './text.js';

export interface UdhrCorpusOptions {
  /** udhr codes, BCP 47 tags or ISO 639-3 codes, in order (default: every text at stage >= 4). */
  languages?: readonly string[];
  /** Keep at most this many texts. */
  maxLanguages?: number;
  /** Fraction of each language's bytes held out for validation (the part before the test part). */
  valFraction: number;
  /** Fraction of each language's bytes held out for testing (the end of each text; default 0). */
  testFraction?: number;
}

export interface UdhrCorpus {
  train: Uint8Array;
  val: Uint8Array;
  test: Uint8Array;
  /** udhr codes of the texts, in the order they are joined. */
  languages: string[];
}

const NEWLINE = 0x0a;

/** Moves a cut forward past UTF-8 continuation bytes (10xxxxxx), so no split starts mid-character. */
function charBoundary(bytes: Uint8Array, i: number): number {
  while (i < bytes.length && (bytes[i]! & 0xc0) === 0x80) i++;
  return i;
}

function join(parts: Uint8Array[]): Uint8Array {
  const nonEmpty = parts.filter((p) => p.length > 0);
  const out = new Uint8Array(nonEmpty.reduce((s, p) => s + p.length, 0) + Math.max(0, nonEmpty.length - 1));
  let o = 0;
  nonEmpty.forEach((p, i) => {
    if (i > 0) out[o++] = NEWLINE;
    out.set(p, o);
    o += p.length;
  });
  return out;
}

/**
 * Every language appears in every split: a split cut once over the concatenation would put whole
 * languages (the last ones) only in validation and test, measuring transfer rather than fit.
 */
export async function loadUdhrCorpus(opts: UdhrCorpusOptions): Promise<UdhrCorpus> {
  const valFraction = opts.valFraction;
  const testFraction = opts.testFraction ?? 0;
  for (const [name, f] of [['valFraction', valFraction], ['testFraction', testFraction]] as const) {
    if (!(f >= 0 && f < 1)) throw new Error(`loadUdhrCorpus: ${name} must be in [0, 1), got ${f}`);
  }
  if (valFraction + testFraction >= 1) throw new Error(`loadUdhrCorpus: valFraction + testFraction must be < 1, got ${valFraction} + ${testFraction}`);
  const texts = await loadUdhr({
    ...(opts.languages ? { languages: opts.languages } : {}),
    ...(opts.maxLanguages !== undefined ? { maxLanguages: opts.maxLanguages } : {}),
  });
  const train: Uint8Array[] = [];
  const val: Uint8Array[] = [];
  const test: Uint8Array[] = [];
  for (const t of texts) {
    const bytes = encodeBytes(t.text);
    const n = bytes.length;
    const testStart = charBoundary(bytes, n - Math.round(n * testFraction));
    const valStart = Math.min(testStart, charBoundary(bytes, n - Math.round(n * testFraction) - Math.round(n * valFraction)));
    train.push(bytes.subarray(0, valStart));
    val.push(bytes.subarray(valStart, testStart));
    test.push(bytes.subarray(testStart));
  }
  return { train: join(train), val: join(val), test: join(test), languages: texts.map((t) => t.language) };
}
