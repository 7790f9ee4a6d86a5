// safetensors and checkpoints: round trips, PyTorch-written fixtures, a battery of hostile files, fuzzing, atomic writes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  parseSafetensors, readSafetensorsFile, serializeSafetensors, writeSafetensorsFile, writeFileAtomic, SafetensorsError,
} from '../src/io/index.js';
import { Linear, Module, Rng, Tensor } from '../src/index.js';
import { loadCheckpoint, loadModelWeights, saveCheckpoint } from '../src/models/checkpoint.js';

const f32 = (v: number[], shape: number[] = [v.length]): Tensor => new Tensor(Float32Array.from(v), shape);
const f64 = (v: number[], shape: number[] = [v.length]): Tensor => new Tensor(Float64Array.from(v), shape);
const i32 = (v: number[], shape: number[] = [v.length]): Tensor => new Tensor(Int32Array.from(v), shape);

const bytesOf = (t: Tensor): Buffer => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);

function assertSameTensor(a: Tensor, b: Tensor, name: string): void {
  assert.equal(a.dtype, b.dtype, `${name} dtype`);
  assert.deepEqual([...a.shape], [...b.shape], `${name} shape`);
  // Bytes, not values: NaN payloads and -0 must survive.
  assert.ok(bytesOf(a).equals(bytesOf(b)), `${name} data`);
}

const tmp = (): string => mkdtempSync(join(tmpdir(), 'moe-st-'));

// --- crafting files ---------------------------------------------------------------------------

function craft(header: unknown, data: Uint8Array | number = 0, headerLength?: bigint): Uint8Array {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const payload = typeof data === 'number' ? new Uint8Array(data) : data;
  const out = new Uint8Array(8 + json.length + payload.length);
  new DataView(out.buffer).setBigUint64(0, headerLength ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(payload, 8 + json.length);
  return out;
}

function assertRejects(bytes: Uint8Array, ...fragments: string[]): void {
  let err: unknown;
  try {
    parseSafetensors(bytes, { source: 'crafted.safetensors' });
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof SafetensorsError, `expected a SafetensorsError, got ${String(err)}`);
  assert.match(err.message, /crafted\.safetensors/);
  for (const f of fragments) assert.ok(err.message.includes(f), `message ${JSON.stringify(err.message)} lacks ${JSON.stringify(f)}`);
}

// --- round trips ------------------------------------------------------------------------------

test('round trip of float32, float64, int32, empty and scalar tensors, with metadata', () => {
  const specials = f32([NaN, -0, Infinity, -Infinity, 1e-45, 3.4e38]);
  const tensors: Record<string, Tensor> = {
    'experts.w1': f32([1, 2, 3, 4, 5, 6], [2, 3]),
    'router.weight': f64([Math.PI, -Math.E, 1e-300], [3, 1]),
    indices: i32([0, -1, 2147483647, -2147483648]),
    scalar: f32([2.5], []),
    empty: f32([], [0, 4]),
    emptyInt: i32([], [3, 0]),
    specials,
    odd: f64([1.5], [1]),
  };
  const bytes = serializeSafetensors(tensors, { format: 'pt', note: 'ünïcödé' });
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  assert.equal(n % 8, 0, 'header padded to 8 bytes');
  const { tensors: back, metadata } = parseSafetensors(bytes);
  assert.deepEqual(metadata, { format: 'pt', note: 'ünïcödé' });
  assert.deepEqual(new Set(back.keys()), new Set(Object.keys(tensors)));
  for (const [k, t] of Object.entries(tensors)) assertSameTensor(back.get(k)!, t, k);
  assert.deepEqual(back.get('scalar')!.shape, []);
  assert.equal(back.get('scalar')!.item(), 2.5);

  // Data is laid out float64 first, then float32, then int32, so every tensor is aligned to its item size.
  assert.deepEqual([...back.keys()], ['odd', 'router.weight', 'empty', 'experts.w1', 'scalar', 'specials', 'emptyInt', 'indices']);

  // Unaligned source bytes (a slice starting at an odd offset) still decode into aligned arrays.
  const shifted = new Uint8Array(bytes.length + 3);
  shifted.set(bytes, 3);
  const again = parseSafetensors(shifted.subarray(3)).tensors;
  for (const [k, t] of Object.entries(tensors)) assertSameTensor(again.get(k)!, t, k);
  // Fresh copies: mutating the file bytes must not reach the tensors.
  shifted.fill(0);
  assert.equal(again.get('scalar')!.item(), 2.5);
});

test('the same tensors give the same bytes from a record, a map or pairs in any order', () => {
  const a = f32([1, 2]);
  const b = i32([3]);
  const c = f64([4]);
  const ref = serializeSafetensors({ a, b, c });
  assert.deepEqual(serializeSafetensors([['c', c], ['b', b], ['a', a]]), ref);
  assert.deepEqual(serializeSafetensors(new Map([['b', b], ['a', a], ['c', c]])), ref);
  assert.equal(parseSafetensors(ref).tensors.size, 3);
  const noMeta = Buffer.from(ref).toString('latin1');
  assert.ok(!noMeta.includes('__metadata__'), 'no metadata key unless metadata is given');
});

test('serialize rejects duplicate, reserved and non-string things', () => {
  assert.throws(() => serializeSafetensors([['x', f32([1])], ['x', f32([2])]]), /'x' appears twice/);
  assert.throws(() => serializeSafetensors({ __metadata__: f32([1]) }), /reserved/);
  assert.throws(() => serializeSafetensors({ x: f32([1]) }, { n: 3 as unknown as string }), /metadata 'n' must be a string/);
  assert.throws(() => serializeSafetensors({ x: [1, 2] as unknown as Tensor }), /'x' is not a Tensor/);
  // A tensor named __proto__ is data, not a prototype.
  const back = parseSafetensors(serializeSafetensors([['__proto__', f32([7])]])).tensors;
  assert.equal(back.get('__proto__')!.item(), 7);
});

// --- PyTorch fixtures -------------------------------------------------------------------------

const fixture = (name: string): URL => new URL(`../../test/fixtures/${name}`, import.meta.url);

type Expected = Record<string, { dtype: string; shape: number[]; data: Array<number | string> }>;
const expectedJson = JSON.parse(readFileSync(fixture('ref.json'), 'utf8')) as Record<string, unknown> & { metadata: Record<string, string> };

const decodeValue = (v: number | string): number => (v === 'NaN' ? NaN : v === 'Infinity' ? Infinity : v === '-Infinity' ? -Infinity : v === '-0' ? -0 : (v as number));

function checkAgainstExpected(file: string, ourDtype: (d: string) => string): Map<string, Tensor> {
  const bytes = readFileSync(fixture(file));
  const { tensors, metadata } = parseSafetensors(bytes, { source: file });
  assert.deepEqual(metadata, expectedJson.metadata);
  const expected = expectedJson[file] as Expected;
  assert.deepEqual(new Set(tensors.keys()), new Set(Object.keys(expected)));
  for (const [name, e] of Object.entries(expected)) {
    const t = tensors.get(name)!;
    assert.equal(t.dtype, ourDtype(e.dtype), `${name} dtype`);
    assert.deepEqual([...t.shape], e.shape, `${name} shape`);
    const want = e.data.map(decodeValue);
    assert.equal(t.size, want.length, `${name} size`);
    // Object.is: exact, and -0 / NaN distinguished.
    t.data.forEach((v, i) => assert.ok(Object.is(v, want[i]), `${name}[${i}]: ${v} vs ${want[i]}`));
  }
  return tensors;
}

test('reads the PyTorch-written fixture (F32/F64/I32) and rewrites it byte for byte', () => {
  const tensors = checkAgainstExpected('ref.safetensors', (d) => ({ F32: 'float32', F64: 'float64', I32: 'int32' })[d]!);
  const original = readFileSync(fixture('ref.safetensors'));
  const rewritten = serializeSafetensors(tensors, expectedJson.metadata);
  assert.ok(Buffer.from(rewritten).equals(original), 'moe-ts lays out the file exactly like the reference writer');
  const fromFile = readSafetensorsFile(fileURLToPath(fixture('ref.safetensors')));
  for (const [k, t] of tensors) assertSameTensor(fromFile.tensors.get(k)!, t, k);
});

test('reads PyTorch F16, BF16, I64, U8 and BOOL, widening to float32 and narrowing to int32 exactly', () => {
  checkAgainstExpected('ref_half.safetensors', (d) => (d === 'F16' || d === 'BF16' ? 'float32' : 'int32'));
});

test('an I64 value outside int32 is an error, not a wrap', () => {
  const data = new Uint8Array(16);
  new DataView(data.buffer).setBigInt64(8, 2n ** 40n, true);
  assertRejects(craft({ ids: { dtype: 'I64', shape: [2], data_offsets: [0, 16] } }, data), '"ids"', 'I64 value 1099511627776 at index 1 does not fit int32');
});

const encodeValue = (v: number): number | string => (Number.isNaN(v) ? 'NaN' : v === Infinity ? 'Infinity' : v === -Infinity ? '-Infinity' : Object.is(v, -0) ? '-0' : v);

test('PyTorch reads what moe-ts writes (skipped without /usr/bin/python3 and torch)', (t) => {
  const dir = tmp();
  try {
    const tensors: Record<string, Tensor> = {
      'blocks.0.moe.experts.w1': f32([0.1, -2, 3.5, NaN, -0, Infinity], [2, 3]),
      'router.weight': f64([Math.PI, 1e-310], [1, 2]),
      counts: i32([5, -7, 2147483647]),
      scalar: f32([1.25], []),
      empty: f32([], [2, 0]),
    };
    const file = join(dir, 'moe.safetensors');
    writeSafetensorsFile(file, tensors, { format: 'pt' });
    const expect: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(tensors)) expect[k] = { dtype: { float32: 'F32', float64: 'F64', int32: 'I32' }[v.dtype], shape: v.shape, data: v.toFlatList().map(encodeValue) };
    writeFileSync(join(dir, 'expect.json'), JSON.stringify({ tensors: expect }));
    const script = fileURLToPath(new URL('../../reference/safetensors_ref.py', import.meta.url));
    const r = spawnSync('/usr/bin/python3', [script, 'read', file, '--expect', join(dir, 'expect.json')], { encoding: 'utf8', timeout: 60_000 });
    if (r.error !== undefined || r.status === 77) {
      t.skip(`no PyTorch reference: ${r.error?.message ?? r.stderr.trim()}`);
      return;
    }
    assert.equal(r.status, 0, `python reader failed:\n${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /OK: 5 tensors match/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// --- hostile files ----------------------------------------------------------------------------

const ok = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };

test('files shorter than 8 bytes are rejected', () => {
  for (let n = 0; n < 8; n++) assertRejects(new Uint8Array(n), `file is ${n} bytes`);
});

test('header lengths past the file or the cap are rejected without allocating', () => {
  assertRejects(craft({ x: ok }, 8, 1000n), 'header length 1000 runs past the end');
  assertRejects(craft({ x: ok }, 8, 2n ** 53n - 1n), 'exceeds the limit');
  assertRejects(craft({ x: ok }, 8, 2n ** 64n - 1n), 'exceeds the limit');
  assertRejects(craft('', 0), 'not valid JSON');
});

test('headers that are not a UTF-8 JSON object are rejected', () => {
  assertRejects(craft('{"x": ', 8), 'not valid JSON');
  assertRejects(craft('not json at all', 8), 'not valid JSON');
  assertRejects(craft([1, 2, 3], 8), 'must be a JSON object, got an array');
  assertRejects(craft('null', 8), 'must be a JSON object, got null');
  assertRejects(craft('42', 8), 'must be a JSON object');
  assertRejects(craft('"str"', 8), 'must be a JSON object');
  const badUtf8 = craft('{"x":1}    ', 8);
  badUtf8[10] = 0xff;
  assertRejects(badUtf8, 'not valid UTF-8');
});

test('bad entries name the tensor and what is wrong', () => {
  const cases: Array<[unknown, number, string[]]> = [
    [{ w: 3 }, 8, ['"w"', 'entry must be an object']],
    [{ w: { ...ok, dtype: 'Q7' } }, 8, ['"w"', 'unknown dtype "Q7"']],
    [{ w: { ...ok, dtype: 'toString' } }, 8, ['unknown dtype "toString"']],
    [{ w: { ...ok, dtype: '__proto__' } }, 8, ['unknown dtype "__proto__"']],
    [{ w: { ...ok, dtype: 7 } }, 8, ['dtype must be a string']],
    [{ w: { dtype: 'F8_E4M3', shape: [8], data_offsets: [0, 8] } }, 8, ['"w"', 'dtype F8_E4M3 is not supported']],
    [{ w: { ...ok, shape: [-2] } }, 8, ['"w"', 'shape must be an array of non-negative integers, got [-2]']],
    [{ w: { ...ok, shape: [1.5] } }, 8, ['shape must be an array']],
    [{ w: { ...ok, shape: ['2'] } }, 8, ['shape must be an array']],
    [{ w: { ...ok, shape: 2 } }, 8, ['shape must be an array']],
    [{ w: { ...ok, shape: [1e300] } }, 8, ['shape must be an array']],
    [{ w: { ...ok, shape: [2 ** 40, 2 ** 40] } }, 8, ['"w"', 'more elements than can be addressed']],
    [{ w: { ...ok, shape: [2 ** 26, 2 ** 26, 2 ** 10] } }, 8, ['more elements than can be addressed']],
    [{ w: { ...ok, shape: [2 ** 51] } }, 8, ['span 8 bytes']],
    [{ w: { ...ok, data_offsets: [0, 16] } }, 8, ['"w"', 'run past the end of the data (8 bytes']],
    [{ w: { ...ok, data_offsets: [8, 0] } }, 8, ['"w"', 'begin is after end']],
    [{ w: { ...ok, data_offsets: [0, 4] } }, 8, ['"w"', 'span 4 bytes but F32 shape [2] needs 8']],
    [{ w: { ...ok, data_offsets: [0] } }, 8, ['data_offsets must be [begin, end]']],
    [{ w: { ...ok, data_offsets: [-8, 0] } }, 8, ['data_offsets must be [begin, end]']],
    [{ w: { ...ok, data_offsets: [0.5, 8.5] } }, 8, ['data_offsets must be [begin, end]']],
    [{ w: { ...ok, data_offsets: '0,8' } }, 8, ['data_offsets must be [begin, end]']],
    [{ w: { dtype: 'F32', shape: [2] } }, 8, ['data_offsets must be [begin, end]']],
    [{ a: ok, b: { ...ok, data_offsets: [4, 12] } }, 12, ['overlap', '"a"', '"b"']],
    [{ a: ok, b: ok }, 8, ['overlap']],
    [{ __metadata__: { n: 1 }, w: ok }, 8, ['__metadata__ "n" must be a string, got number 1']],
    [{ __metadata__: ['x'], w: ok }, 8, ['__metadata__ must be an object']],
    [{ __metadata__: 'x', w: ok }, 8, ['__metadata__ must be an object']],
  ];
  for (const [header, size, fragments] of cases) assertRejects(craft(header, size), ...fragments);
});

test('edge cases the format allows are accepted', () => {
  // Empty header object, null metadata, padding spaces, a gap between tensors, zero-size tensors sharing an offset.
  assert.equal(parseSafetensors(craft('{}')).tensors.size, 0);
  assert.deepEqual(parseSafetensors(craft('{"__metadata__":null}       ')).metadata, {});
  const gap = parseSafetensors(craft({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] } }, 12));
  assert.deepEqual([...gap.tensors.keys()], ['a', 'b']);
  const empties = parseSafetensors(craft({ a: { dtype: 'F32', shape: [0], data_offsets: [4, 4] }, b: { dtype: 'I32', shape: [0, 9], data_offsets: [4, 4] }, c: ok }, 8));
  assert.equal(empties.tensors.size, 3);
  // A shape with a zero and a huge dimension is empty, not an overflow.
  assert.equal(parseSafetensors(craft({ z: { dtype: 'F32', shape: [0, 2 ** 50], data_offsets: [0, 0] } })).tensors.get('z')!.size, 0);
});

test('fuzz: mutated files parse consistently or throw a SafetensorsError, quickly', () => {
  const rng = new Rng(1234);
  const seeds = [
    serializeSafetensors({ a: f32([1, 2, 3, 4], [2, 2]), b: f64([5]), c: i32([6, 7]), s: f32([8], []), e: f32([], [0]) }, { format: 'pt' }),
    new Uint8Array(readFileSync(fixture('ref_half.safetensors'))),
  ];
  const digits = '0123456789';
  const start = Date.now();
  let parsed = 0;
  for (let it = 0; it < 300; it++) {
    const src = seeds[it % seeds.length]!;
    let b = new Uint8Array(src);
    const n = Number(new DataView(b.buffer).getBigUint64(0, true));
    switch (rng.int(4)) {
      case 0: // flip random bits anywhere
        for (let k = 0, m = 1 + rng.int(4); k < m; k++) b[rng.int(b.length)]! ^= 1 << rng.int(8);
        break;
      case 1: // truncate
        b = b.subarray(0, rng.int(b.length));
        break;
      case 2: { // rewrite a digit inside the header: offsets and shapes go wrong while the JSON stays valid
        for (let k = 0; k < 8; k++) {
          const p = 8 + rng.int(n);
          if (digits.includes(String.fromCharCode(b[p]!))) { b[p] = 48 + rng.int(10); break; }
        }
        break;
      }
      default: // corrupt the length prefix
        b[rng.int(8)] = rng.int(256);
    }
    try {
      const { tensors, metadata } = parseSafetensors(b, { source: `fuzz#${it}` });
      for (const [name, t] of tensors) {
        assert.equal(t.data.length, t.shape.reduce((x, y) => x * y, 1), name);
        assert.ok(['float32', 'float64', 'int32'].includes(t.dtype));
      }
      for (const v of Object.values(metadata)) assert.equal(typeof v, 'string');
      parsed++;
    } catch (e) {
      if (!(e instanceof SafetensorsError)) throw new Error(`iteration ${it}: threw ${String(e)} instead of a SafetensorsError`);
      assert.match(e.message, new RegExp(`fuzz#${it}\\b`));
    }
  }
  assert.ok(parsed > 0 && parsed < 300, `a mix of accepted and rejected mutations (${parsed} parsed)`);
  assert.ok(Date.now() - start < 5000, 'fuzzing finishes fast');
});

// --- files and atomic writes ------------------------------------------------------------------

test('readSafetensorsFile names the path: missing, truncated, directory', () => {
  const dir = tmp();
  try {
    const missing = join(dir, 'nope.safetensors');
    assert.throws(() => readSafetensorsFile(missing), (e: Error) => e instanceof SafetensorsError && e.message.includes(missing) && e.message.includes('does not exist'));
    const p = join(dir, 'w.safetensors');
    writeSafetensorsFile(p, { w: f32([1, 2, 3]) });
    const full = readFileSync(p);
    writeFileSync(p, full.subarray(0, full.length - 4));
    assert.throws(() => readSafetensorsFile(p), (e: Error) => e instanceof SafetensorsError && e.message.includes(p) && e.message.includes('"w"') && e.message.includes('run past the end'));
    writeFileSync(p, full.subarray(0, 5));
    assert.throws(() => readSafetensorsFile(p), (e: Error) => e.message.includes(p) && e.message.includes('file is 5 bytes'));
    assert.throws(() => readSafetensorsFile(dir), (e: Error) => e.message.includes(dir) && e.message.includes('not a regular file'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** A tensor whose storage cannot be read: makes a write fail after it has started. */
function brokenTensor(): Tensor {
  const t = Object.create(Tensor.prototype) as Tensor;
  Object.defineProperty(t, 'shape', { value: [1] });
  Object.defineProperty(t, 'dtype', { value: 'float32' });
  Object.defineProperty(t, 'data', { get: () => { throw new Error('disk on fire'); } });
  return t;
}

test('atomic writes: a failed write leaves the old file intact and no temp files behind', () => {
  const dir = tmp();
  try {
    const p = join(dir, 'w.safetensors');
    writeSafetensorsFile(p, { w: f32([1, 2]) });
    writeSafetensorsFile(p, { w: f32([3, 4]) });
    assert.deepEqual(readSafetensorsFile(p).tensors.get('w')!.toList(), [3, 4]);
    assert.deepEqual(readdirSync(dir), ['w.safetensors']);

    assert.throws(() => writeSafetensorsFile(p, { w: brokenTensor() }), /disk on fire/);
    assert.deepEqual(readSafetensorsFile(p).tensors.get('w')!.toList(), [3, 4]);
    assert.deepEqual(readdirSync(dir), ['w.safetensors']);

    // The rename itself fails (the target is a non-empty directory): the temp file is removed.
    const blocked = join(dir, 'blocked');
    mkdirSync(blocked);
    writeFileSync(join(blocked, 'keep'), 'x');
    assert.throws(() => writeFileAtomic(blocked, 'data'), (e: Error) => e.message.includes(blocked));
    assert.deepEqual(readdirSync(dir).sort(), ['blocked', 'w.safetensors']);
    assert.deepEqual(readdirSync(blocked), ['keep']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// --- checkpoints ------------------------------------------------------------------------------

class Tiny extends Module {
  readonly enc: Linear;
  readonly dec: Linear;
  /** A buffer: saved and loaded with the parameters, not trained. */
  readonly counts: Tensor;
  constructor(seed: number) {
    super();
    const rng = new Rng(seed);
    this.enc = this.module('enc', new Linear(3, 4, { rng }));
    this.dec = this.module('dec', new Linear(4, 2, { rng, bias: false }));
    this.counts = this.buffer('counts', i32([seed, seed * 10]));
  }
}

test('checkpoint round trip: weights in place, optimizer state, config, trainer state', () => {
  const root = tmp();
  try {
    const dir = join(root, 'ckpt');
    const model = new Tiny(1);
    const optimizerState = { 'exp_avg.enc.weight': f32(new Array(12).fill(0.5), [4, 3]), step: i32([10]) };
    const config = { d: 3, hidden: 4, routing: 'top2', nested: { list: [1, 2] } };
    const trainerState = { step: 10, epoch: 1, rng: [1, 2, 3, 4], metrics: { loss: 0.25 } };
    saveCheckpoint(dir, { model, config, optimizerState, trainerState });
    assert.deepEqual(readdirSync(dir).sort(), ['config.json', 'model.safetensors', 'optimizer.safetensors', 'state.json']);
    assert.deepEqual(readdirSync(root), ['ckpt'], 'no staging directories left');

    const ck = loadCheckpoint(dir);
    assert.deepEqual(ck.config, config);
    assert.deepEqual(ck.trainerState, trainerState);
    assert.equal(ck.modelMetadata.format, 'pt');
    assert.deepEqual([...ck.model.keys()].sort(), ['counts', 'dec.weight', 'enc.bias', 'enc.weight']);
    assertSameTensor(ck.optimizerState!.get('exp_avg.enc.weight')!, optimizerState['exp_avg.enc.weight'], 'exp_avg');
    assertSameTensor(ck.optimizerState!.get('step')!, optimizerState.step, 'step');

    const fresh = new Tiny(2);
    const before = fresh.stateDict().map(([, p]) => [p, p.data] as const);
    assert.notDeepEqual(fresh.enc.weight.toList(), model.enc.weight.toList());
    assert.deepEqual(loadModelWeights(fresh, ck.model), { missing: [], unexpected: [] });
    for (const [name, p] of model.stateDict()) assertSameTensor(fresh.stateDict().find(([n]) => n === name)![1], p, name);
    assert.deepEqual(fresh.counts.toList(), [1, 10]);
    // In place: the same Tensor objects and storage, so an optimizer built on them stays valid.
    fresh.stateDict().forEach(([, p], i) => { assert.equal(p, before[i]![0]); assert.equal(p.data, before[i]![1]); });

    // Without optimizer state; overwriting an existing checkpoint leaves no siblings.
    saveCheckpoint(dir, { model: fresh, config: null });
    assert.deepEqual(readdirSync(dir).sort(), ['config.json', 'model.safetensors', 'state.json']);
    assert.deepEqual(readdirSync(root), ['ckpt']);
    const ck2 = loadCheckpoint(dir);
    assert.equal(ck2.optimizerState, null);
    assert.equal(ck2.trainerState, null);
    assert.equal(ck2.config, null);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('loadModelWeights: name, shape and dtype mismatches are listed and change nothing', () => {
  const src = new Tiny(1);
  const weights = new Map(src.stateDict());

  const noBias = new Linear(3, 4, { bias: false });
  assert.throws(() => loadModelWeights(noBias, new Map([['weight', f32(new Array(12).fill(1), [4, 3])], ['bias', f32([1, 2, 3, 4])], ['extra', f32([1])]])),
    /unexpected 2: bias, extra/);
  const lin = new Linear(3, 2);
  assert.throws(() => loadModelWeights(lin, weights), (e: Error) => /missing 2: weight, bias/.test(e.message) && /unexpected 4: enc\.weight, enc\.bias, dec\.weight, counts/.test(e.message));

  const other = new Tiny(3);
  const snapshot = other.stateDict().map(([, p]) => p.toList());
  const wrongShape = new Map(weights);
  wrongShape.set('enc.weight', f32(new Array(8).fill(0), [4, 2]));
  wrongShape.set('enc.bias', f32(new Array(5).fill(0), [5]));
  assert.throws(() => loadModelWeights(other, wrongShape),
    (e: Error) => e.message.includes("'enc.weight' expects shape [4, 3] but found [4, 2]") && e.message.includes("'enc.bias' expects shape [4] but found [5]"));
  const wrongDtype = new Map(weights);
  wrongDtype.set('dec.weight', f64(new Array(8).fill(0), [2, 4]));
  assert.throws(() => loadModelWeights(other, wrongDtype), /'dec\.weight' expects dtype float32 but found float64/);
  assert.deepEqual(other.stateDict().map(([, p]) => p.toList()), snapshot, 'a failed load changes nothing');

  // Non-strict: the intersection loads, and the leftovers are reported.
  const partial = new Map(weights);
  partial.delete('dec.weight');
  partial.set('head.weight', f32([1]));
  assert.deepEqual(loadModelWeights(other, partial, { strict: false }), { missing: ['dec.weight'], unexpected: ['head.weight'] });
  assert.deepEqual(other.enc.weight.toList(), src.enc.weight.toList());
  assert.deepEqual(other.dec.weight.toList(), snapshot[2]);
});

test('checkpoint atomicity: a failed save leaves the previous checkpoint whole and other files alone', () => {
  const root = tmp();
  try {
    const dir = join(root, 'run');
    mkdirSync(dir);
    writeFileSync(join(dir, 'metrics.jsonl'), '{"step":1}\n');
    const model = new Tiny(1);
    saveCheckpoint(dir, { model, config: { v: 1 }, optimizerState: { m: f32([1]) }, trainerState: { step: 1 } });
    const snapshot = (): Array<readonly [string, Buffer]> => readdirSync(dir).sort().map((f) => [f, readFileSync(join(dir, f))] as const);
    const before = snapshot();
    assert.deepEqual(before.map(([f]) => f), ['config.json', 'metrics.jsonl', 'model.safetensors', 'optimizer.safetensors', 'state.json']);

    // Fails after model.safetensors has been staged; then fails while encoding the config.
    assert.throws(() => saveCheckpoint(dir, { model: new Tiny(2), config: { v: 2 }, optimizerState: { m: brokenTensor() } }), /disk on fire/);
    assert.deepEqual(snapshot(), before, 'nothing changed, no staged files left');
    assert.throws(() => saveCheckpoint(dir, { model, config: 10n }), /config cannot be written as JSON/);
    assert.deepEqual(snapshot(), before);
    assert.deepEqual(loadCheckpoint(dir).trainerState, { step: 1 });
    assert.deepEqual(readdirSync(root), ['run']);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('checkpoint crash recovery: before the commit point the old checkpoint loads, after it the new one', () => {
  const root = tmp();
  try {
    const dir = join(root, 'ckpt');
    const a = new Tiny(1);
    saveCheckpoint(dir, { model: a, config: { v: 'a' }, optimizerState: { m: f32([1]) }, trainerState: { step: 1 } });

    // Crash before the commit point: staged files but no journal. Loads see A; the next save sweeps the strays.
    writeFileSync(join(dir, 'model.safetensors.tmp-99-beef'), 'half a file');
    writeFileSync(join(dir, 'state.json.tmp-99-beef'), '{');
    assert.deepEqual(loadCheckpoint(dir).config, { v: 'a' });

    // Crash after the commit point, with one rename already applied: loads see B, whole.
    const b = new Tiny(2);
    const scratch = join(root, 'b');
    saveCheckpoint(scratch, { model: b, config: { v: 'b' }, trainerState: { step: 2 } });
    const renames: Array<[string, string]> = [];
    for (const f of ['model.safetensors', 'config.json', 'state.json']) {
      writeFileSync(join(dir, `${f}.tmp-7-abc`), readFileSync(join(scratch, f)));
      renames.push([`${f}.tmp-7-abc`, f]);
    }
    writeFileSync(join(dir, 'checkpoint.commit.json'), JSON.stringify({ format: 'moe-ts checkpoint commit', renames, remove: ['optimizer.safetensors'] }));
    renameSync(join(dir, 'model.safetensors.tmp-7-abc'), join(dir, 'model.safetensors'));
    const ck = loadCheckpoint(dir);
    assert.deepEqual([ck.config, ck.trainerState, ck.optimizerState], [{ v: 'b' }, { step: 2 }, null]);
    assert.deepEqual(ck.model.get('enc.weight')!.toList(), b.enc.weight.toList());

    // The next save completes B's commit, sweeps the strays, then writes C.
    saveCheckpoint(dir, { model: a, config: { v: 'c' }, trainerState: { step: 3 } });
    assert.deepEqual(readdirSync(dir).sort(), ['config.json', 'model.safetensors', 'state.json']);
    assert.deepEqual(loadCheckpoint(dir).trainerState, { step: 3 });

    // Files mixed by hand from two saves are refused, as are damaged journals and missing pieces.
    writeFileSync(join(dir, 'model.safetensors'), readFileSync(join(scratch, 'model.safetensors')));
    assert.throws(() => loadCheckpoint(dir), /model\.safetensors belongs to a different checkpoint/);
    writeFileSync(join(dir, 'checkpoint.commit.json'), JSON.stringify({ format: 'moe-ts checkpoint commit', renames: [['../../etc/passwd', 'state.json']], remove: [] }));
    assert.throws(() => loadCheckpoint(dir), /checkpoint\.commit\.json is not a valid commit record/);
    rmSync(join(dir, 'checkpoint.commit.json'));
    rmSync(join(dir, 'state.json'));
    assert.throws(() => loadCheckpoint(dir), /state\.json is missing/);
    assert.throws(() => loadCheckpoint(join(root, 'never')), /checkpoint directory does not exist/);
    writeFileSync(join(root, 'file'), 'x');
    assert.throws(() => saveCheckpoint(join(root, 'file'), { model: a, config: {} }), /exists and is not a directory/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
