// The run directory under faults (issue 9): kill the real `moe` process, race two writers, reuse,
// resume from torn logs and odd paths, full disks and read-only folders; then inspect the directory.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs, { appendFileSync, chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const STEPS_PER_EPOCH = 3;

/** A byte-level LM of ~5k parameters on a 16 KB text file: one step takes about a millisecond. */
function setup(extra: { schedule?: Record<string, unknown>; epochs?: number } = {}): { dir: string; cfg: string } {
  const dir = mkdtempSync(join(tmpdir(), 'moe-rundir-'));
  const words = ['the', 'cat', 'sat', 'on', 'a', 'mat', 'and', 'dog', 'ran', 'far', 'away', 'from', 'home'];
  let text = '';
  for (let i = 0; text.length < 16000; i++) text += `${words[(i * 7 + (i >> 3)) % words.length]} `;
  writeFileSync(join(dir, 'tiny.txt'), text);
  const config = {
    name: 'tiny-lm',
    model: { type: 'byte-lm', dModel: 8, layers: 1, heads: 1, maxSeqLen: 16, dFF: 8, ffn: 'moe', numExperts: 2, k: 1 },
    data: { dataset: 'text', path: join(dir, 'tiny.txt'), valFraction: 0.1, testFraction: 0.1, seqLen: 8, stepsPerEpoch: STEPS_PER_EPOCH, evalWindows: 2 },
    optim: { optimizer: 'adam', lr: 0.01, ...(extra.schedule ?? { schedule: 'constant' }) },
    train: { epochs: extra.epochs ?? 2, batchSize: 2, seed: 0, evalEvery: 1 },
  };
  const cfg = join(dir, 'tiny.json');
  writeFileSync(cfg, JSON.stringify(config));
  return { dir, cfg };
}

interface Done { code: number | null; signal: NodeJS.Signals | null; out: string; err: string }

function moe(args: string[], opts: { cwd?: string } = {}): Done {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', ...opts });
  return { code: r.status, signal: r.signal, out: r.stdout, err: r.stderr };
}

/** Starts `moe` in its own process group (so cleanup can kill whatever it started) with the launcher's default environment. */
function start(args: string[]): ChildProcess & { done: Promise<Done>; exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> } {
  const env = { ...process.env };
  delete env['GLIBC_TUNABLES'];
  delete env['MOE_NO_REEXEC'];
  const p = spawn(process.execPath, [MAIN, ...args], { env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  p.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  p.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  // 'close' waits for the output pipes, which a process left behind would hold open: 'exited' does not
  const done = new Promise<Done>((res) => p.on('close', (code, signal) => res({ code, signal, out, err })));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => p.on('exit', (code, signal) => res({ code, signal })));
  return Object.assign(p, { done, exited });
}

function killGroup(p: ChildProcess): void {
  try { process.kill(-p.pid!, 'SIGKILL'); } catch { /* already gone */ }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls until `cond` holds; false after `ms` (a liveness bound, generous for a loaded machine, not a timing claim). */
async function waitFor(cond: () => boolean, ms = 60_000): Promise<boolean> {
  for (const t0 = Date.now(); Date.now() - t0 < ms; await sleep(25)) if (cond()) return true;
  return cond();
}

function alive(pid: number): boolean {
  try { process.kill(pid, 0); } catch { return false; }
  // a zombie is dead for our purpose (it no longer writes)
  try { return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8')); } catch { return false; }
}

/** Every process below `root` (Linux /proc). */
function descendants(root: number): number[] {
  const parent = new Map<number, number>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const s = readFileSync(`/proc/${e}/stat`, 'utf8');
      parent.set(Number(e), Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[1]));
    } catch { /* exited meanwhile */ }
  }
  const out: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const p = queue.shift()!;
    for (const [c, pp] of parent) if (pp === p) { out.push(c); queue.push(c); }
  }
  return out;
}

type Rec = Record<string, unknown>;
const records = (file: string): Rec[] => readFileSync(file, 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Rec);
const stepsOf = (file: string): number[] => records(file).filter((r) => r['type'] === 'step').map((r) => r['step'] as number);
const lastStep = (file: string): number => {
  try { return Math.max(0, ...stepsOf(file)); } catch { return 0; }
};
const checkpointState = (run: string): { step: number; epoch: number; scheduleSteps?: number } =>
  (JSON.parse(readFileSync(join(run, 'checkpoint', 'state.json'), 'utf8')) as { trainerState: { step: number; epoch: number } }).trainerState;
const range = (a: number, b: number): number[] => Array.from({ length: b - a + 1 }, (_, i) => a + i);
// the process tests find what moe started through /proc and kill process groups
const skipNotLinux = process.platform !== 'linux' && 'reads /proc (Linux only)';

test('killing moe (SIGINT, SIGTERM, SIGHUP, SIGKILL) ends the training: no process is left writing the run', { skip: skipNotLinux }, async () => {
  const { dir, cfg } = setup({ epochs: 100000 });
  try {
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGKILL'] as const) {
      const run = join(dir, sig);
      const p = start(['train', '--config', cfg, '--out', run]);
      try {
        assert.ok(await waitFor(() => lastStep(join(run, 'metrics.jsonl')) > 0), `${sig}: training did not start`);
        const below = descendants(p.pid!);
        process.kill(p.pid!, sig);
        const r = await p.exited;
        const signo = { SIGINT: 2, SIGTERM: 15, SIGHUP: 1, SIGKILL: 9 }[sig];
        assert.ok(r.signal === sig || r.code === 128 + signo, `${sig}: moe exited with ${r.code ?? r.signal}, not by the signal or with ${128 + signo}`);
        const gone = await waitFor(() => below.every((pid) => !alive(pid)), 20_000);
        assert.ok(gone, `${sig}: process(es) ${below.filter(alive).join(', ')} started by moe still run after moe was killed`);
        const steps = lastStep(join(run, 'metrics.jsonl'));
        await sleep(300);
        assert.equal(lastStep(join(run, 'metrics.jsonl')), steps, `${sig}: the metrics log still grows`);
      } finally {
        killGroup(p);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('one writer per run directory: a second moe train is refused naming the holder; a killed holder\'s lock is taken over', { skip: skipNotLinux }, async () => {
  const { dir, cfg } = setup({ epochs: 100000 });
  const run = join(dir, 'run');
  const p = start(['train', '--config', cfg, '--out', run]);
  try {
    assert.ok(await waitFor(() => existsSync(join(run, 'checkpoint', 'state.json'))), 'no checkpoint appeared');
    const holder = (JSON.parse(readFileSync(join(run, '.moe.lock'), 'utf8')) as { pid: number }).pid;
    assert.ok(holder === p.pid || descendants(p.pid!).includes(holder), `the lock names pid ${holder}, not moe (${p.pid})`);
    for (const args of [['--resume', run], ['--config', cfg, '--out', run, '--force']]) {
      const second = start(['train', ...args, '--set', 'train.epochs=100000']);
      let timer: NodeJS.Timeout | undefined;
      const r = await Promise.race([second.done, new Promise<null>((res) => { timer = setTimeout(() => res(null), 60_000); })]);
      clearTimeout(timer);
      killGroup(second);
      assert.ok(r !== null, `moe train ${args.join(' ')} ran on beside the first writer`);
      assert.equal(r.code, 2, r.err);
      assert.match(r.err, new RegExp(`is in use by process ${holder} on `), r.err);
    }
    killGroup(p); // kill -9 of everything: the lock stays behind
    await p.done;
    assert.ok(existsSync(join(run, '.moe.lock')));
    const epoch = checkpointState(run).epoch;
    const r = moe(['train', '--resume', run, '--set', `train.epochs=${epoch + 1}`]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, new RegExp(`taking over the lock of process ${holder} .*no longer running`));
    assert.ok(!existsSync(join(run, '.moe.lock')), 'the lock is released at the end');
  } finally {
    killGroup(p);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a new run never overwrites an old one: --out DIR and the default runs/<name> are refused unless --resume or --force', () => {
  const { dir, cfg } = setup();
  try {
    const first = moe(['train', '--config', cfg], { cwd: dir });
    assert.equal(first.code, 0, first.err);
    const run = join(dir, 'runs', 'tiny-lm');
    const before = { metrics: readFileSync(join(run, 'metrics.jsonl')), state: readFileSync(join(run, 'checkpoint', 'state.json')) };
    for (const args of [['--config', cfg], ['--config', cfg, '--out', run]]) {
      const again = moe(['train', ...args], { cwd: dir });
      assert.equal(again.code, 2, `moe train ${args.join(' ')} reused ${run}: ${again.err}`);
      assert.match(again.err, /is not empty .*earlier run.*--resume .*--force/);
    }
    assert.deepEqual(readFileSync(join(run, 'metrics.jsonl')), before.metrics, 'the old log is untouched');
    assert.deepEqual(readFileSync(join(run, 'checkpoint', 'state.json')), before.state, 'the old checkpoint is untouched');
    const other = join(dir, 'notes');
    mkdirSync(other);
    writeFileSync(join(other, 'todo.txt'), 'x');
    assert.equal(moe(['train', '--config', cfg, '--out', other]).code, 2, 'a folder holding anything is not a fresh run directory');
    const forced = moe(['train', '--config', cfg, '--force'], { cwd: dir });
    assert.equal(forced.code, 0, forced.err);
    assert.match(forced.err, /--force: removed the previous run's/);
    assert.deepEqual(stepsOf(join(run, 'metrics.jsonl')), range(1, 2 * STEPS_PER_EPOCH), 'a forced run starts a fresh log');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('resume after kill -9 cuts metrics.jsonl back to the checkpoint: no torn line, no step twice, the same losses', { skip: skipNotLinux }, async () => {
  const { dir, cfg } = setup({ epochs: 100000 });
  const run = join(dir, 'run');
  const metrics = join(run, 'metrics.jsonl');
  const p = start(['train', '--config', cfg, '--out', run]);
  try {
    assert.ok(await waitFor(() => existsSync(join(run, 'checkpoint', 'state.json')) && lastStep(metrics) > checkpointState(run).step + 1));
  } finally {
    killGroup(p);
  }
  await p.done;
  try {
    const ckpt = checkpointState(run);
    // logged after the checkpoint (as a kill between two checkpoints leaves it), then a line cut short
    if (lastStep(metrics) <= ckpt.step) appendFileSync(metrics, `${JSON.stringify({ type: 'step', step: ckpt.step + 1, loss: 9 })}\n`);
    appendFileSync(metrics, '{"type":"step","step":');
    const epochs = ckpt.epoch + 2;
    const r = moe(['train', '--resume', run, '--set', `train.epochs=${epochs}`]);
    assert.equal(r.code, 0, r.err);
    const total = epochs * STEPS_PER_EPOCH;
    assert.deepEqual(stepsOf(metrics), range(1, total), 'every step logged once, in order');
    const vals = records(metrics).filter((x) => x['type'] === 'eval' && x['split'] === 'val').map((x) => x['step']);
    assert.deepEqual(vals, range(1, epochs).map((e) => e * STEPS_PER_EPOCH), 'one validation record per epoch');
    const straight = moe(['train', '--config', cfg, '--set', `train.epochs=${epochs}`, '--out', join(dir, 'straight')]);
    assert.equal(straight.code, 0, straight.err);
    const losses = (f: string) => records(f).filter((x) => x['type'] === 'step').map((x) => x['loss']);
    assert.deepEqual(losses(metrics), losses(join(dir, 'straight', 'metrics.jsonl')), 'the resumed run repeats the uninterrupted one');
    const plot = moe(['plot', run, '--split', 'val', '--out', join(dir, 'curve')]);
    assert.equal(plot.code, 0, plot.err);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('resume edge cases: --config, RUN/checkpoint, a finished run, --out elsewhere, more epochs under a cosine schedule', () => {
  const { dir, cfg } = setup({ schedule: { schedule: 'warmup-cosine', warmupSteps: 1, minLr: 0.001 } });
  try {
    const run = join(dir, 'run');
    assert.equal(moe(['train', '--config', cfg, '--out', run]).code, 0);
    const snapshot = () => ({ metrics: readFileSync(join(run, 'metrics.jsonl'), 'utf8'), state: checkpointState(run) });
    const finished = snapshot();

    // another config with --resume: refused with the way to change values
    const other = join(dir, 'other.json');
    writeFileSync(other, readFileSync(cfg, 'utf8').replace('"lr":0.01', '"lr":0.5'));
    let r = moe(['train', '--resume', run, '--config', other]);
    assert.equal(r.code, 2, `--config beside --resume was ignored: ${r.out}`);
    assert.match(r.err, /differs from the configuration of the run being resumed .* in optim\.lr.*--set/);

    // a finished run: nothing to do, nothing written
    r = moe(['train', '--resume', run]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /already finished its 2 epochs \(step 6\); nothing to do/);
    assert.doesNotMatch(r.out, /steps in/);
    assert.deepEqual(snapshot(), finished);

    // more epochs past a schedule that ends at a rate of 0 would not learn: refused with the reason, nothing written
    r = moe(['train', '--resume', run, '--set', 'train.epochs=3', '--set', 'optim.minLr=0']);
    assert.equal(r.code, 2);
    assert.match(r.err, /schedule of this run was built for 6 steps and ends at optim.minLr = 0, so the steps after 6 would not learn/);
    assert.deepEqual(snapshot(), finished);

    // --out elsewhere: the run continues there; the original stays as it was
    const fork = join(dir, 'fork');
    r = moe(['train', '--resume', run, '--out', fork, '--set', 'train.epochs=3']);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(snapshot(), finished, 'the resumed run is left alone');
    assert.deepEqual(stepsOf(join(fork, 'metrics.jsonl')), range(1, 9));
    assert.equal(checkpointState(fork).step, 9);

    // RUN/checkpoint means RUN; more epochs keep the cosine schedule of 6 steps, then minLr
    r = moe(['train', '--resume', join(run, 'checkpoint'), '--set', 'train.epochs=3']);
    assert.equal(r.code, 0, r.err);
    assert.ok(!existsSync(join(run, 'checkpoint', 'checkpoint')), 'wrote a checkpoint inside the checkpoint');
    assert.equal(checkpointState(run).step, 9);
    assert.deepEqual(stepsOf(join(run, 'metrics.jsonl')), range(1, 9));
    assert.match(r.err, /keeps the 6 steps it started with/);
    const lr = records(join(run, 'metrics.jsonl')).filter((x) => x['type'] === 'step').map((x) => x['lr'] as number);
    assert.deepEqual(lr.slice(0, 6), records(join(fork, 'metrics.jsonl')).filter((x) => x['type'] === 'step').map((x) => x['lr']).slice(0, 6));
    assert.deepEqual(lr.slice(6), [0.001, 0.001, 0.001], 'after the original 6 steps the rate stays at minLr');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('system errors say what and where: --out on a file, plot into a missing folder', () => {
  const { dir, cfg } = setup();
  try {
    const file = join(dir, 'afile');
    writeFileSync(file, 'x');
    let r = moe(['train', '--config', cfg, '--out', file]);
    assert.equal(r.code, 2);
    assert.match(r.err, /--out .*afile is an existing file, not a directory/);

    const run = join(dir, 'run');
    assert.equal(moe(['train', '--config', cfg, '--out', run]).code, 0);
    r = moe(['plot', run, '--split', 'val', '--out', join(dir, 'missing', 'dir', 'x')]);
    assert.equal(r.code, 2);
    assert.match(r.err, /the directory .*missing\/dir does not exist/);
    assert.doesNotMatch(r.err, /\.tmp/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** uid/gid of the unprivileged identity a root test process runs `moe` as (nobody's numbers; no passwd entry is needed). */
const UNPRIVILEGED = 65534;

test('a read-only run directory is named with "permission denied", not ENOENT or a temporary file', (t) => {
  const { dir, cfg } = setup();
  try {
    const ro = join(dir, 'ro');
    mkdirSync(ro);
    chmodSync(ro, 0o555);
    chmodSync(dir, 0o755);
    // root writes anywhere: as root, run moe under an unprivileged uid (Node drops to it in the child)
    const asRoot = process.getuid?.() === 0;
    const ids = asRoot ? { uid: UNPRIVILEGED, gid: UNPRIVILEGED } : {};
    // Preconditions, checked as that identity: it can run moe and read the config and its data (a
    // checkout or TMPDIR under a private home fails here), and it cannot write into ro/ (a file
    // system that ignores modes would make the case meaningless). Unmet: skip, saying why.
    const probe = spawnSync(process.execPath, ['-e', `
      const fs = require('node:fs');
      for (const p of process.argv.slice(1, 3)) fs.accessSync(p, fs.constants.R_OK);
      try { fs.accessSync(process.argv[3], fs.constants.W_OK); } catch { process.exit(0); }
      console.error(process.argv[3] + ' is writable despite mode 0555'); process.exit(3);
    `, cfg, join(dir, 'tiny.txt'), ro], { encoding: 'utf8', ...ids });
    const version = spawnSync(process.execPath, [MAIN, '--version'], { encoding: 'utf8', ...ids });
    const who = asRoot ? `uid ${UNPRIVILEGED} (tests run as root)` : 'this user';
    if (probe.error || probe.status !== 0 || version.status !== 0) {
      const why = probe.error?.message ?? (probe.status !== 0 ? probe.stderr.trim().split('\n').find((l) => /Error|writable/.test(l)) ?? probe.stderr.trim() : version.stderr.trim().split('\n')[0]);
      t.skip(`${who} cannot run this case here: ${why}`);
      return;
    }
    const s = spawnSync(process.execPath, [MAIN, 'train', '--config', cfg, '--out', ro], { encoding: 'utf8', ...ids });
    assert.equal(s.status, 2, s.stderr);
    assert.match(s.stderr, /cannot write into the run directory .*\/ro: permission denied/);
    assert.doesNotMatch(s.stderr, /ENOENT|\.tmp-/);
    assert.deepEqual(readdirSync(ro), [], 'nothing was written');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Makes every write to a file whose name contains `needle` fail with ENOSPC (fd writes and appends), in this process. */
function diskFullFor(needle: string): () => void {
  const orig = { openSync: fs.openSync, writeSync: fs.writeSync, appendFileSync: fs.appendFileSync };
  const full = new Set<number>();
  const enospc = () => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28, syscall: 'write' });
  fs.openSync = ((p: fs.PathLike, ...rest: unknown[]) => {
    const fd = (orig.openSync as (...a: unknown[]) => number)(p, ...rest);
    if (String(p).includes(needle)) full.add(fd);
    return fd;
  }) as typeof fs.openSync;
  fs.writeSync = ((fd: number, ...rest: unknown[]) => {
    if (full.has(fd)) throw enospc();
    return (orig.writeSync as (...a: unknown[]) => number)(fd, ...rest);
  }) as typeof fs.writeSync;
  fs.appendFileSync = ((p: fs.PathOrFileDescriptor, ...rest: unknown[]) => {
    if (String(p).includes(needle)) throw enospc();
    return (orig.appendFileSync as (...a: unknown[]) => void)(p, ...rest);
  }) as typeof fs.appendFileSync;
  syncBuiltinESMExports();
  return () => {
    Object.assign(fs, orig);
    syncBuiltinESMExports();
  };
}

test('a full disk names the file: config.json, metrics.jsonl, the checkpoint\'s model.safetensors', async () => {
  const { runTraining } = await import('../src/train/run.js');
  const { validateRun } = await import('../src/config/run.js');
  const { dir, cfg } = setup();
  try {
    const config = validateRun(JSON.parse(readFileSync(cfg, 'utf8')));
    for (const name of ['config.json', 'metrics.jsonl', 'model.safetensors']) {
      const out = join(dir, name);
      const restore = diskFullFor(join(out, name === 'model.safetensors' ? 'checkpoint/model.safetensors' : name));
      try {
        await assert.rejects(runTraining(config, { out, progress: null }), (e: Error) => {
          assert.match(e.message, new RegExp(`${out.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/(checkpoint/)?${name.replace('.', '\\.')}: no space left on the device \\(ENOSPC\\)`));
          assert.doesNotMatch(e.message, /\.tmp-/);
          return true;
        });
      } finally {
        restore();
      }
      // (a run that failed before writing anything removes the directory it created)
      const strays = existsSync(out) ? readdirSync(out, { recursive: true }).map(String).filter((f) => f.includes('.tmp-')) : [];
      assert.deepEqual(strays, [], 'no temp file is left behind');
      assert.ok(!existsSync(join(out, '.moe.lock')), 'a failed run releases its lock');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('cutMetricsLog keeps complete records up to the checkpoint, the later copy of a record logged twice', async () => {
  const { cutMetricsLog } = await import('../src/train/rundir.js');
  const line = (o: Rec) => JSON.stringify(o);
  const steps = (a: number, b: number, tag: string) => range(a, b).map((s) => line({ type: 'step', step: s, tag }));
  // an older, unrepaired resume: steps 1-7 (checkpoint at 5), a torn line, then 6-12 again
  const text = [...steps(1, 7, 'a'), '{"type":"st', ...steps(6, 12, 'b'), line({ type: 'eval', split: 'val', step: 10 })].join('\n') + '\n';
  const cut = cutMetricsLog(text, 10);
  const kept = cut.text.trim().split('\n').map((l) => JSON.parse(l) as Rec);
  assert.deepEqual(kept.map((r) => r['step']), [...range(1, 10), 10]);
  assert.deepEqual(kept.slice(5, 7).map((r) => r['tag']), ['b', 'b'], 'the copy from the resumed run wins');
  assert.deepEqual({ after: cut.after, torn: cut.torn, duplicates: cut.duplicates }, { after: 2, torn: 1, duplicates: 2 });
  assert.equal(cutMetricsLog('', 3).text, '');
  assert.equal(cutMetricsLog(`${line({ type: 'step', step: 1 })}\n`, 0).kept, 0, 'a checkpoint at step 0 keeps no step');
});

test('the run lock: held once, stale when its pid is gone or reused, refused for another host or an unreadable file', async () => {
  const { acquireRunLock, LOCK_NAME } = await import('../src/train/rundir.js');
  const dir = mkdtempSync(join(tmpdir(), 'moe-lock-'));
  const lockFile = join(dir, LOCK_NAME);
  const messages: string[] = [];
  const log = (l: string) => messages.push(l);
  try {
    const held = acquireRunLock(dir, log);
    assert.throws(() => acquireRunLock(dir, log), new RegExp(`is in use by process ${process.pid} on `));
    held.release();
    assert.ok(!existsSync(lockFile), 'release removes the lock');

    const me = JSON.parse((() => { const l = acquireRunLock(dir); const t = readFileSync(lockFile, 'utf8'); l.release(); return t; })()) as Rec;
    const gone = spawnSync(process.execPath, ['-e', '0']).pid!;
    const stale = (over: Rec) => writeFileSync(lockFile, JSON.stringify({ ...me, ...over }));
    for (const [what, over] of [['a dead pid', { pid: gone }], ['a pid reused by another process', { procStart: '1' }]] as const) {
      if (what !== 'a dead pid' && me['procStart'] === undefined) continue; // no /proc here
      stale(over);
      messages.length = 0;
      acquireRunLock(dir, log).release();
      assert.match(messages.join('\n'), /taking over the lock of process \d+ .*no longer running/, what);
    }
    stale({ host: 'elsewhere.example' });
    assert.throws(() => acquireRunLock(dir, log), /locked by process \d+ on elsewhere\.example.*cannot be checked from .*delete .*\.moe\.lock/);
    writeFileSync(lockFile, 'not json');
    assert.throws(() => acquireRunLock(dir, log), /not a moe lock record/);
    // a lock that is not ours is never removed by our release
    rmSync(lockFile);
    const mine = acquireRunLock(dir, log);
    stale({ pid: 1 });
    mine.release();
    assert.ok(existsSync(lockFile));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
