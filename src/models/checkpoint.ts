// Checkpoint directories (weights and optimizer state as safetensors, config and trainer state as JSON), committed as a whole.
// Here in models/ rather than train/: loading a trained model (load.ts) reads checkpoints too, and
// models/ must not import train/ (DESIGN's arrows); train/ saves through this file.
//
// Layout of a checkpoint directory `dir` (other files there, such as a run's metrics.jsonl, are left alone):
//   model.safetensors      model.stateDict() by dotted name ('blocks.0.moe.router.weight'); metadata format=pt
//   optimizer.safetensors  optimizer state tensors, only when given
//   config.json            the model/run config, as given
//   state.json             { format, version, id, files, trainerState }
//   checkpoint.commit.json only while a save is being applied (see below)
//
// Atomicity (a redo journal): every new file is first written to `<name>.tmp-<pid>-<rand>` beside
// its final name and fsynced. Then checkpoint.commit.json, listing the renames, is written
// atomically: that is the commit point. The renames are applied (state.json last) and the journal
// deleted. Interrupted before the commit point, the previous checkpoint is untouched (the stray temp
// files are ignored by loads and removed by the next save); after it, the new checkpoint is complete:
// loadCheckpoint reads through the journal and the next save finishes the renames. So a load always
// sees one whole checkpoint, old or new, never a mix. Every safetensors file carries the id of its
// checkpoint, so files mixed by hand from two checkpoints are refused. One writer per directory;
// readers may run beside it (an evaluation while a run saves): a load during which the checkpoint's
// id changed is read again (see consistentRead).

import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import type { Module } from '../nn/module.js';
import type { Tensor } from '../tensor/tensor.js';
import { shapeStr, shapesEqual } from '../tensor/shape.js';
import { readSafetensorsFile, serializeSafetensors, type SafetensorsInput } from '../io/safetensors.js';
import { fsyncDir, tempSiblingPath, writeFileAtomic, writeFileSynced } from '../io/atomic.js';

export const CHECKPOINT_FORMAT = 'moe-ts checkpoint';
export const CHECKPOINT_VERSION = 1;

export const CHECKPOINT_FILES = Object.freeze({
  model: 'model.safetensors',
  optimizer: 'optimizer.safetensors',
  config: 'config.json',
  state: 'state.json',
});

/** Present only between a save's commit point and the end of its renames. */
export const CHECKPOINT_JOURNAL = 'checkpoint.commit.json';

const KNOWN_FILES = new Set<string>(Object.values(CHECKPOINT_FILES));
const STAGED_NAME = /^(model\.safetensors|optimizer\.safetensors|config\.json|state\.json|checkpoint\.commit\.json)\.tmp-\d+-[0-9a-f]+$/;

export interface CheckpointContents {
  /** Its stateDict() (parameters and buffers) is saved. */
  model: Module;
  /** Anything JSON can hold; written as config.json. */
  config: unknown;
  /** Optimizer state tensors by name (e.g. 'exp_avg.blocks.0.weight'). */
  optimizerState?: SafetensorsInput;
  /** Step, epoch, RNG state, metrics: anything JSON can hold (NaN and Infinity become null, as in JSON). */
  trainerState?: unknown;
}

export interface LoadedCheckpoint {
  dir: string;
  /** Model tensors by dotted name; pass to loadModelWeights. */
  model: Map<string, Tensor>;
  modelMetadata: Record<string, string>;
  /** Null when the checkpoint was saved without optimizer state. */
  optimizerState: Map<string, Tensor> | null;
  config: unknown;
  /** Null when none was saved. */
  trainerState: unknown;
}

interface StateFile {
  format: string;
  version: number;
  /** Random per save; repeated in each safetensors file's metadata as checkpoint_id. */
  id: string;
  files: string[];
  trainerState: unknown;
}

interface Journal {
  format: string;
  /** [staged name, final name], applied in order. */
  renames: Array<[string, string]>;
  /** Final names the new checkpoint no longer has (a previous optimizer.safetensors). */
  remove: string[];
}

const JOURNAL_FORMAT = 'moe-ts checkpoint commit';

function toJson(value: unknown, what: string, dir: string): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value ?? null, null, 2);
  } catch (e) {
    throw new Error(`saveCheckpoint ${dir}: ${what} cannot be written as JSON: ${(e as Error).message}`, { cause: e });
  }
  // JSON.stringify answers undefined (no throw) for functions and symbols at the top level.
  if (text === undefined) throw new Error(`saveCheckpoint ${dir}: ${what} cannot be written as JSON (got ${typeof value})`);
  return `${text}\n`;
}

/** Reads and validates the journal; its names come from disk, so none may point outside the directory. */
function readJournal(dir: string, who: string): Journal | null {
  const p = join(dir, CHECKPOINT_JOURNAL);
  if (!existsSync(p)) return null;
  let j: Partial<Journal> | null;
  try {
    j = JSON.parse(readFileSync(p, 'utf8')) as Partial<Journal> | null;
  } catch (e) {
    // deleted since existsSync: the save it recorded has just been applied
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new Error(`${who} ${dir}: ${CHECKPOINT_JOURNAL} is unreadable (${(e as Error).message}); it was written atomically, so the directory was modified by hand`, { cause: e });
  }
  const okRename = (r: unknown): boolean => Array.isArray(r) && r.length === 2 && typeof r[1] === 'string' && KNOWN_FILES.has(r[1])
    && typeof r[0] === 'string' && STAGED_NAME.test(r[0]) && r[0].startsWith(`${r[1]}.tmp-`);
  if (j === null || typeof j !== 'object' || j.format !== JOURNAL_FORMAT || !Array.isArray(j.renames) || !j.renames.every(okRename)
    || !Array.isArray(j.remove) || !j.remove.every((r) => typeof r === 'string' && KNOWN_FILES.has(r))) {
    throw new Error(`${who} ${dir}: ${CHECKPOINT_JOURNAL} is not a valid commit record`);
  }
  return j as Journal;
}

/** Finishes a committed save (idempotent: a rename already done is skipped). */
function applyJournal(dir: string, j: Journal): void {
  for (const [staged, final] of j.renames) {
    if (existsSync(join(dir, staged))) renameSync(join(dir, staged), join(dir, final));
  }
  for (const r of j.remove) {
    try { unlinkSync(join(dir, r)); } catch (e) { if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e; }
  }
  fsyncDir(dir);
  unlinkSync(join(dir, CHECKPOINT_JOURNAL));
  fsyncDir(dir);
}

/** Completes an interrupted committed save, and removes files staged by an interrupted uncommitted one. */
function recover(dir: string): void {
  const j = readJournal(dir, 'saveCheckpoint');
  if (j !== null) applyJournal(dir, j);
  for (const f of readdirSync(dir)) if (STAGED_NAME.test(f)) unlinkSync(join(dir, f));
}

/** Writes a checkpoint into `dir` (created if needed), replacing a previous one as a whole (see the file comment). */
export function saveCheckpoint(dir: string, contents: CheckpointContents): void {
  const target = resolve(dir);
  if (existsSync(target) && !statSync(target).isDirectory()) throw new Error(`saveCheckpoint ${target}: exists and is not a directory`);
  mkdirSync(target, { recursive: true });
  recover(target);
  const previous = previousFiles(target);

  const id = randomBytes(8).toString('hex');
  const meta = { format: 'pt', producer: 'moe-ts', checkpoint_id: id };
  const staged: Array<[string, string]> = [];
  const stage = (final: string, data: () => string | Uint8Array): void => {
    const bytes = data();
    const tmp = tempSiblingPath(join(target, final));
    writeFileSynced(tmp, bytes);
    staged.push([tmp.slice(target.length + 1), final]);
  };
  try {
    stage(CHECKPOINT_FILES.model, () => serializeSafetensors(contents.model.stateDict(), meta));
    if (contents.optimizerState !== undefined) {
      const opt = contents.optimizerState;
      stage(CHECKPOINT_FILES.optimizer, () => serializeSafetensors(opt, meta));
    }
    stage(CHECKPOINT_FILES.config, () => toJson(contents.config, 'config', target));
    const files = staged.map(([, f]) => f).concat(CHECKPOINT_FILES.state);
    const state: StateFile = { format: CHECKPOINT_FORMAT, version: CHECKPOINT_VERSION, id, files, trainerState: contents.trainerState ?? null };
    // state.json is renamed last, so even a reader that ignores the journal finds the old state until the end.
    stage(CHECKPOINT_FILES.state, () => toJson(state, 'trainerState', target));
    fsyncDir(target);
    const journal: Journal = {
      format: JOURNAL_FORMAT,
      renames: staged,
      remove: previous.has(CHECKPOINT_FILES.optimizer) && contents.optimizerState === undefined ? [CHECKPOINT_FILES.optimizer] : [],
    };
    writeFileAtomic(join(target, CHECKPOINT_JOURNAL), JSON.stringify(journal));
  } catch (e) {
    for (const [tmp] of staged) {
      try { unlinkSync(join(target, tmp)); } catch { /* best effort; the next save removes strays */ }
    }
    throw e;
  }
  try {
    applyJournal(target, readJournal(target, 'saveCheckpoint')!);
  } catch (e) {
    throw new Error(`saveCheckpoint ${target}: the checkpoint is committed but applying it failed (${(e as Error).message}); loadCheckpoint reads it as is, and the next save completes it`, { cause: e });
  }
}

/** Files of the checkpoint currently in `dir`, by its state.json (empty when there is none or it is unreadable). */
function previousFiles(dir: string): Set<string> {
  try {
    const s = JSON.parse(readFileSync(join(dir, CHECKPOINT_FILES.state), 'utf8')) as Partial<StateFile>;
    return new Set(Array.isArray(s.files) ? s.files : []);
  } catch {
    return new Set();
  }
}

function readJson(path: string, name: string, dir: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    const missing = (e as NodeJS.ErrnoException).code === 'ENOENT';
    throw new Error(`loadCheckpoint ${dir}: ${missing ? `${name} is missing` : `cannot read ${name}: ${(e as Error).message}`}`, { cause: e });
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`loadCheckpoint ${dir}: ${name} is not valid JSON: ${(e as Error).message}`, { cause: e });
  }
}

/**
 * Reads a checkpoint directory's parts; weights come back as tensors for loadModelWeights. Never
 * writes: a committed but unfinished save is read through its journal. `{ optimizer: false }` skips
 * the optimizer state (inference: it need not be there, and it is twice the model's size).
 */
export function loadCheckpoint(dir: string, opts: { optimizer?: boolean } = {}): LoadedCheckpoint {
  const target = resolve(dir);
  return consistentRead(target, () => loadCheckpointOnce(target, opts));
}

/**
 * read() of a checkpoint, repeated while other processes' saves replace it. A save (a run writing
 * while this process evaluates) can replace files between two of a load's reads: a model file of
 * the new checkpoint after the old state.json disagrees on its checkpoint id, and config.json,
 * which carries no id, could come from the other save unnoticed. Files change only after a save's
 * commit point, which changes the checkpoint's id, so a read during which the id stayed the same
 * read one checkpoint; otherwise it is read again (a save's renames take milliseconds). An error
 * while the id stayed the same stands (files mixed by hand, a damaged file).
 */
function consistentRead<T>(target: string, read: () => { value: T; id: string }): T {
  for (let attempt = 1; ; attempt++) {
    // after a read that overlapped a save, wait a little longer each time (1, 2, 4, ... ms) so that
    // a writer saving in a tight loop does not overlap every attempt
    if (attempt > 1) sleepMs(2 ** (attempt - 2));
    const before = currentStateId(target);
    let r: { value: T; id: string };
    try {
      r = read();
    } catch (e) {
      if (attempt >= MAX_LOAD_ATTEMPTS || currentStateId(target) === before) throw e;
      continue;
    }
    if (currentStateId(target) === r.id) return r.value;
    if (attempt >= MAX_LOAD_ATTEMPTS) {
      throw new Error(`loadCheckpoint ${target}: the checkpoint was replaced during each of ${MAX_LOAD_ATTEMPTS} reads (another process is saving to it); read it again when that save is done`);
    }
  }
}

/** Blocks this thread for ms milliseconds (checkpoint I/O is synchronous; Node allows Atomics.wait here). */
function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Attempts of a load while other processes' saves keep replacing the checkpoint under it (~0.25 s of waits in all). */
const MAX_LOAD_ATTEMPTS = 9;

/** The id in the checkpoint's state.json as a load would read it now (null: unreadable). */
function currentStateId(target: string): string | null {
  try {
    const { state } = readState(target, 'loadCheckpoint');
    return state.id as string;
  } catch {
    return null;
  }
}

/**
 * The checkpoint's state.json, validated, read through a committed save's journal, and the path a
 * load reads each file from.
 */
function readState(target: string, who: string): { state: Partial<StateFile> & { files: string[]; id: string }; via: ReadVia } {
  if (!existsSync(target)) throw new Error(`${who} ${target}: checkpoint directory does not exist`);
  if (!statSync(target).isDirectory()) throw new Error(`${who} ${target}: not a directory`);
  const journal = readJournal(target, who);
  const via: ReadVia = (name, read) => {
    const staged = journal?.renames.find(([, f]) => f === name)?.[0];
    if (staged !== undefined && existsSync(join(target, staged))) {
      try {
        return read(join(target, staged));
      } catch (e) {
        // renamed to its final name since existsSync (the save is being applied): read it there
        if (existsSync(join(target, staged))) throw e;
      }
    }
    return read(join(target, name));
  };
  const state = via(CHECKPOINT_FILES.state, (p) => readJson(p, CHECKPOINT_FILES.state, target)) as Partial<StateFile> | null;
  if (typeof state !== 'object' || state === null || state.format !== CHECKPOINT_FORMAT) {
    throw new Error(`${who} ${target}: state.json is not a ${CHECKPOINT_FORMAT} (format ${JSON.stringify(state?.format)})`);
  }
  if (state.version !== CHECKPOINT_VERSION) throw new Error(`${who} ${target}: checkpoint version ${state.version} is not supported (this build reads ${CHECKPOINT_VERSION})`);
  const files = state.files;
  if (!Array.isArray(files) || typeof state.id !== 'string') throw new Error(`${who} ${target}: state.json has no id or file list`);
  for (const f of [CHECKPOINT_FILES.model, CHECKPOINT_FILES.config]) {
    if (!files.includes(f)) throw new Error(`${who} ${target}: state.json does not list ${f}`);
  }
  return { state: state as Partial<StateFile> & { files: string[]; id: string }, via };
}

/** Reads a checkpoint file through a committed save's journal: its staged copy while there is one, else the file. */
type ReadVia = <T>(name: string, read: (path: string) => T) => T;

/**
 * A checkpoint's config.json alone (what `moe train --resume` needs before it takes the run's lock),
 * without reading its weights; loadCheckpoint reads the whole checkpoint.
 */
export function readCheckpointConfig(dir: string): unknown {
  const target = resolve(dir);
  return consistentRead(target, () => {
    const { state, via } = readState(target, 'loadCheckpoint');
    return { value: via(CHECKPOINT_FILES.config, (p) => readJson(p, CHECKPOINT_FILES.config, target)), id: state.id };
  });
}

function loadCheckpointOnce(target: string, opts: { optimizer?: boolean }): { value: LoadedCheckpoint; id: string } {
  const { state, via } = readState(target, 'loadCheckpoint');
  const files = state.files;
  const readTensors = (name: string): { tensors: Map<string, Tensor>; metadata: Record<string, string> } => {
    const r = via(name, (p) => {
      if (!existsSync(p)) throw new Error(`loadCheckpoint ${target}: ${name} is listed in state.json but missing`);
      return readSafetensorsFile(p);
    });
    if (r.metadata.checkpoint_id !== state.id) {
      throw new Error(`loadCheckpoint ${target}: ${name} belongs to a different checkpoint (checkpoint_id ${JSON.stringify(r.metadata.checkpoint_id)}, state.json ${JSON.stringify(state.id)}); files were mixed from two saves`);
    }
    return r;
  };
  const model = readTensors(CHECKPOINT_FILES.model);
  // NaN weights would evaluate to chance accuracy and exit 0: refuse them, naming the tensor
  for (const [name, t] of model.tensors) {
    if (t.dtype === 'int32') continue;
    const d = t.data;
    let bad = 0;
    let first = -1;
    for (let i = 0; i < d.length; i++) if (!Number.isFinite(d[i]!)) { bad++; if (first < 0) first = i; }
    if (bad > 0) {
      throw new Error(`loadCheckpoint ${target}: ${CHECKPOINT_FILES.model}: tensor '${name}' ${shapeStr(t.shape)} holds ${bad} non-finite value(s) (${d[first]} at flat index ${first}); these weights are unusable (was it saved from a diverged run?)`);
    }
  }
  const optimizerState = opts.optimizer !== false && files.includes(CHECKPOINT_FILES.optimizer) ? readTensors(CHECKPOINT_FILES.optimizer).tensors : null;
  const value: LoadedCheckpoint = {
    dir: target,
    model: model.tensors,
    modelMetadata: model.metadata,
    optimizerState,
    config: via(CHECKPOINT_FILES.config, (p) => readJson(p, CHECKPOINT_FILES.config, target)),
    trainerState: state.trainerState ?? null,
  };
  return { value, id: state.id };
}

export interface LoadWeightsOptions {
  /** Default true: every parameter and buffer must be present and no other tensor may be. False: load the intersection (shapes still checked). */
  strict?: boolean;
}

export interface LoadWeightsResult {
  /** Parameters and buffers with no tensor (always empty under strict). */
  missing: string[];
  /** Tensors matching no parameter or buffer (always empty under strict). */
  unexpected: string[];
}

const listNames = (names: string[]): string => (names.length <= 20 ? names.join(', ') : `${names.slice(0, 20).join(', ')}, ... (${names.length - 20} more)`);

/**
 * Copies tensors into a model's existing parameters and buffers (its stateDict) in place (optimizers holding them stay valid).
 * Everything is checked before anything is copied, so a failed load leaves the model unchanged.
 */
export function loadModelWeights(model: Module, tensors: Map<string, Tensor>, opts: LoadWeightsOptions = {}): LoadWeightsResult {
  const strict = opts.strict ?? true;
  const params = model.stateDict();
  const paramNames = new Set(params.map(([n]) => n));
  const missing = params.map(([n]) => n).filter((n) => !tensors.has(n));
  const unexpected = [...tensors.keys()].filter((n) => !paramNames.has(n));
  if (strict && (missing.length > 0 || unexpected.length > 0)) {
    const parts: string[] = [];
    if (missing.length > 0) parts.push(`missing ${missing.length}: ${listNames(missing)}`);
    if (unexpected.length > 0) parts.push(`unexpected ${unexpected.length}: ${listNames(unexpected)}`);
    throw new Error(`loadModelWeights: tensor names do not match the model's parameters and buffers (${parts.join('; ')}); pass { strict: false } to load the intersection`);
  }
  const mismatches: string[] = [];
  for (const [name, p] of params) {
    const t = tensors.get(name);
    if (t === undefined) continue;
    if (!shapesEqual(p.shape, t.shape)) mismatches.push(`'${name}' expects shape ${shapeStr(p.shape)} but found ${shapeStr(t.shape)}`);
    else if (p.dtype !== t.dtype) mismatches.push(`'${name}' expects dtype ${p.dtype} but found ${t.dtype}${p.dtype !== 'int32' && t.dtype !== 'int32' ? ' (cast the model with model.to() first)' : ''}`);
  }
  if (mismatches.length > 0) throw new Error(`loadModelWeights: ${mismatches.length} parameter(s) do not match: ${mismatches.slice(0, 20).join('; ')}${mismatches.length > 20 ? '; ...' : ''}`);
  for (const [name, p] of params) {
    const t = tensors.get(name);
    if (t !== undefined) p.data.set(t.data);
  }
  return { missing, unexpected };
}
