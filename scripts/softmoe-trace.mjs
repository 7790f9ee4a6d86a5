// Trains implicit-bias's Soft MoE classifier (moe-ts recipe, full Fashion-MNIST, training seed 0) for a
// few steps with the moe-ts build under ROOT and dumps every parameter after chosen steps, so that two
// builds (or thread settings) can be compared bit for bit with scripts/softmoe-trace-compare.py.
//
//   node scripts/softmoe-trace.mjs ROOT N STEPS FORMULATION OUT [EVERY]
//
// ROOT: a checkout with dist/ compiled and its native addon built (an old commit in a git worktree
// works: the script uses only APIs that exist since 2026-11-23); N: experts; FORMULATION: auto, slots
// or tokens (sets SoftMoELayer.formulation), or - to leave the build's default (builds before the
// token side have only slots); OUT: writes OUT.json (names, shapes, per-step losses) and OUT.bin
// (float32 parameters at step 0 and every EVERY-th step, default 1, and the last). The thread setting
// (MOE_NATIVE_THREADS, OPENBLAS_NUM_THREADS) is the caller's environment: it changes the bits.
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const [rootArg, nArg, stepsArg, form, outFile, everyArg] = process.argv.slice(2);
if (!rootArg || !nArg || !stepsArg || !form || !outFile) {
  process.stderr.write('usage: node scripts/softmoe-trace.mjs ROOT N STEPS auto|slots|tokens|- OUT [EVERY]\n');
  process.exit(2);
}
const n = Number(nArg);
const steps = Number(stepsArg);
const every = Number(everyArg ?? 1);
for (const [name, v] of [['N', n], ['STEPS', steps], ['EVERY', every]]) {
  if (!Number.isInteger(v) || v < 1) throw new Error(`softmoe-trace: ${name} must be a positive integer, got ${JSON.stringify(v)}`);
}
if (!['auto', 'slots', 'tokens', '-'].includes(form)) throw new Error(`softmoe-trace: FORMULATION must be auto, slots, tokens or -, got ${JSON.stringify(form)}`);
const imp = (p) => import(pathToFileURL(resolve(rootArg, 'dist', 'src', p)).href);
const { SoftMoEClassifier } = await imp('models/softmoe-classifier.js');
const { loadFashionMnist } = await imp('data/mnist.js');
const { ImageClassificationTask } = await imp('train/tasks.js');
const { train } = await imp('train/trainer.js');
const { Adam } = await imp('train/optim.js');
const { constant } = await imp('train/schedule.js');

/** As implicit-bias.ts's Classifier: logits only, no router metrics. */
class Classifier extends SoftMoEClassifier {
  classify(images) { return { logits: this.forward(images).logits, auxLoss: null, metrics: {} }; }
}
// the 2026-11-23 config; newer builds default the recipe fields (slotInputs raw, phiInit normal, decoder bias) to it
const model = new Classifier({ numExperts: n, hidden: null, patch: 14, slotsPerExpert: 1, normalize: true, imageSize: 28, classes: 10 }, 0);
if (form !== '-') model.moe.formulation = form;
const formulation = typeof model.moe.chooseFormulation === 'function' ? model.moe.chooseFormulation(4) : 'slots (the build has no other)';
const splits = loadFashionMnist({});
const task = new ImageClassificationTask(model, { train: splits.train, val: null, test: splits.test }, 256, 0, 250);
const snap = () => model.namedParameters().map(([, p]) => Float32Array.from(p.data));
const dumps = [snap()];
const dumpSteps = [0];
const losses = [];
train(task, {
  epochs: 15, optimizer: new Adam(model.namedParameters(), { lr: 1e-3 }), schedule: constant(1e-3), clipNorm: null,
  seed: 0, metricsFile: null, checkpointDir: null, config: {}, evalEvery: 0, progress: null, maxSteps: steps,
  onStep: (v) => {
    losses.push(v.loss);
    if (v.step % every === 0 || v.step === steps) { dumps.push(snap()); dumpSteps.push(v.step); }
  },
});
const sizes = dumps[0].map((a) => a.length);
const total = sizes.reduce((a, b) => a + b, 0);
const buf = new Float32Array(total * dumps.length);
let o = 0;
for (const d of dumps) for (const a of d) { buf.set(a, o); o += a.length; }
const meta = {
  root: resolve(rootArg), n, steps, formulation, threads: process.env.MOE_NATIVE_THREADS ?? null, openblasThreads: process.env.OPENBLAS_NUM_THREADS ?? null,
  dumpSteps, names: model.namedParameters().map(([k]) => k), shapes: model.namedParameters().map(([, p]) => p.shape), sizes, losses,
};
writeFileSync(`${outFile}.json`, JSON.stringify(meta));
writeFileSync(`${outFile}.bin`, Buffer.from(buf.buffer));
process.stderr.write(`${meta.root} n=${n} ${formulation}: ${steps} steps, last loss ${losses.at(-1)}\n`);
