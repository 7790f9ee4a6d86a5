// `moe experiment multilingual <part> [--quick] [--out DIR] [--seeds N]`: the seed-002 study, one part per claim.

import { rejectUnknown, type ParsedArgs } from './args.js';
import { MULTILINGUAL_PARTS } from '../experiments/multilingual/parts.js';

export function multilingualHelp(): string {
  return `  multilingual <part> [--quick] [--out DIR] [--seeds N]
      The multilingual MoE study on the UDHR corpus (src/data/multilingual-corpus.ts; 46 languages,
      split by article). Parts:
${Object.entries(MULTILINGUAL_PARTS).map(([, p]) => `        ${p.help}`).join('\n')}
      Each part is resumable (finished training runs are cached in DIR/../runs) and writes
      results.json, results.md and PNG plots. Default --out docs/results/multilingual/<part>
      (--quick: runs/experiments/multilingual/<part>-quick, tiny sizes, seconds).
`;
}

/** Runs `moe experiment multilingual <part> ...`; args.positional is ['experiment', 'multilingual', part]. */
export async function multilingualCommand(args: ParsedArgs, command: string): Promise<number> {
  const partName = args.positional[2];
  if (partName === undefined) throw new Error(`experiment multilingual: name a part (${Object.keys(MULTILINGUAL_PARTS).join(', ')})`);
  if (args.positional.length > 3) throw new Error(`experiment multilingual: unexpected argument '${args.positional[3]}'`);
  const part = MULTILINGUAL_PARTS[partName];
  if (!part) throw new Error(`experiment multilingual: unknown part '${partName}' (available: ${Object.keys(MULTILINGUAL_PARTS).join(', ')})`);
  rejectUnknown(args, ['quick', 'out', 'seeds', 'help'], `experiment multilingual ${partName}`);
  const one = (k: string): string | undefined => {
    const v = args.flags.get(k);
    if (v && v.length > 1) throw new Error(`experiment multilingual: option --${k} given ${v.length} times`);
    return v?.[0];
  };
  const q = one('quick');
  if (q !== undefined && !['true', '1', 'yes', ''].includes(q) && !['false', '0', 'no'].includes(q)) throw new Error(`experiment multilingual: option --quick takes no value (got '${q}')`);
  const quick = q !== undefined && ['true', '1', 'yes', ''].includes(q);
  const seedsRaw = one('seeds');
  let seeds: number | undefined;
  if (seedsRaw !== undefined) {
    seeds = Number(seedsRaw);
    if (seedsRaw.trim() === '' || !Number.isInteger(seeds) || seeds < 1) throw new Error(`experiment multilingual: option --seeds: '${seedsRaw}' is not an integer >= 1`);
  }
  const out = one('out');
  const r = await part.run({ quick, command, ...(out !== undefined ? { out } : {}), ...(seeds !== undefined ? { seeds } : {}), log: (l) => console.error(l) });
  console.log(`${r.summary} (${r.seconds.toFixed(1)} s)`);
  return 0;
}
