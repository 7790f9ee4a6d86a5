// Runs the rare-experts study: node dist/src/experiments/rare-experts-main.js [--out DIR] [--steps N] [--high CODE] [--low CODE] [--low-ratio R] [--unseen a,b] [--seed S].

import { parseArgs } from 'node:util';
import { runRareExperts } from './rare-experts.js';

const { values } = parseArgs({
  options: {
    out: { type: 'string' }, steps: { type: 'string' }, high: { type: 'string' }, low: { type: 'string' },
    'low-ratio': { type: 'string' }, unseen: { type: 'string' }, seed: { type: 'string' },
  },
  strict: true,
});
const int = (k: 'steps' | 'seed' | 'low-ratio', min: number): number | undefined => {
  const raw = values[k];
  if (raw === undefined) return undefined;
  const v = Number(raw);
  if (raw.trim() === '' || !Number.isInteger(v) || v < min) throw new Error(`rare-experts: --${k} ${raw}: expected an integer >= ${min}`);
  return v;
};
const steps = int('steps', 1);
const seed = int('seed', 0);
const ratio = int('low-ratio', 1);
const t0 = performance.now();
const r = await runRareExperts({
  out: values.out ?? 'runs/experiments/rare-experts',
  ...(steps !== undefined ? { steps } : {}), ...(seed !== undefined ? { seed } : {}), ...(ratio !== undefined ? { lowRatio: ratio } : {}),
  ...(values.low ? { low: values.low } : {}), ...(values.high ? { high: values.high } : {}),
  ...(values.unseen !== undefined ? { unseen: values.unseen.split(',').filter((s) => s) } : {}),
  log: (l) => console.error(l),
});
for (const l of r.languages) {
  console.log(`${l.language} (${l.role}): ${l.bitsPerByte.toFixed(2)} bits/byte; ${l.rare.map((x) => `t=${x.threshold}: ${(100 * x.rareShare).toFixed(1)}% routed, ${(100 * x.rareTokenShare).toFixed(1)}% tokens`).join('; ')}`);
}
console.error(`done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
