// `moe create`: a random-init MoE decoder as an HF directory (tests, benchmarks; nothing is downloaded).

import type { ParsedArgs } from './args.js';
import { rejectUnknown } from './args.js';
import { HF_MODEL_TYPES } from '../formats/hf/config.js';
import { PRESETS, createRandomHFDir, type Preset } from '../models/moe-decoder-create.js';
import type { MoEFamily } from '../models/moe-decoder-config.js';

export const CREATE_HELP = `moe create --arch ${HF_MODEL_TYPES.join('|')} --preset ${PRESETS.join('|')} --out DIR [--seed S] [--json]

Writes an HF model directory with random weights (seeded: the same seed gives the same bytes):
config.json, model.safetensors (shards + index past 2 GiB), and a byte-level tokenizer.json and
tokenizer_config.json (256 byte ids + special tokens). Written tensor by tensor, so the 1b preset
(about 4 GB in F32) never sits in memory whole.
  tiny   about 1M parameters, for tests; switches on each family's optional features
  small  about 100M parameters, OLMoE-shaped (64 experts, top-8)
  1b     about 1B parameters, OLMoE-shaped (64 experts, top-8)`;

export function createCommand(args: ParsedArgs): number {
  rejectUnknown(args, ['arch', 'preset', 'out', 'seed', 'json'], 'create');
  const get = (k: string): string => {
    const v = args.flags.get(k)?.[0];
    if (v === undefined) throw new Error(`create: --${k} is required (moe create --help)`);
    return v;
  };
  const arch = get('arch');
  if (!(HF_MODEL_TYPES as readonly string[]).includes(arch)) throw new Error(`create: --arch '${arch}' is not one of ${HF_MODEL_TYPES.join(', ')}`);
  const preset = get('preset');
  if (!(PRESETS as readonly string[]).includes(preset)) throw new Error(`create: --preset '${preset}' is not one of ${PRESETS.join(', ')}`);
  const seedText = args.flags.get('seed')?.[0] ?? '0';
  const seed = Number(seedText);
  if (!Number.isSafeInteger(seed)) throw new Error(`create: --seed '${seedText}' is not an integer`);
  const t0 = performance.now();
  const res = createRandomHFDir({ family: arch as MoEFamily, preset: preset as Preset, out: get('out'), seed });
  const seconds = (performance.now() - t0) / 1000;
  if (args.flags.has('json')) {
    console.log(JSON.stringify({ arch, preset, seed, parameters: res.parameters, bytes: res.totalBytes, files: res.files, seconds }));
  } else {
    console.log(`${arch} ${preset}: ${res.parameters.toLocaleString('en')} parameters, ${(res.totalBytes / 1e6).toFixed(1)} MB in ${res.files.length} file(s), ${seconds.toFixed(1)} s -> ${get('out')}`);
  }
  return 0;
}
