// `moe bench ...`: the benchmarks' own command line (src/cli/main.ts hands `moe bench` here), so that
// nothing in src/ imports bench/ (DESIGN.md: arrows point down; the benchmarks sit above the library).

import { parseArgs, rejectUnknown, reportingErrors } from '../src/cli/args.js';
import { getBackend, availableBackends, backendLoadError } from '../src/index.js';
import { nativeInfo } from '../src/backends/native/index.js';
import { benchAllToAllCommand, benchEpOptimizerCommand, BENCH_ALL_TO_ALL_HELP, BENCH_EP_OPTIMIZER_HELP } from '../src/cli/parallel-commands.js';
import { benchGemm, formatGemmReport } from './gemm.js';
import { benchElementwise, formatBandwidthReport } from './elementwise.js';
import { benchMoELayer, formatMoELayerReport } from './moe-layer.js';
import { benchSoftMoE, formatSoftMoEReport } from './soft-moe.js';
import { benchDecodeCommand, BENCH_DECODE_HELP } from './decode-command.js';
import { benchServeCommand, BENCH_SERVE_HELP } from './serve-command.js';
import { benchCostModelCommand, BENCH_COST_MODEL_HELP } from './cost-model-command.js';
import { benchExpertCacheCommand, BENCH_EXPERT_CACHE_HELP } from './expert-cache.js';

export const BENCH_HELP: Record<string, string> = {
  'all-to-all': BENCH_ALL_TO_ALL_HELP,
  'ep-optimizer': BENCH_EP_OPTIMIZER_HELP,
  gemm: `moe bench gemm [--json] [--backend js|native] [--js-sizes 256,512]

Measures the float32 FMA peak of this machine (all threads, widest vector unit), then the GFLOP/s
of matmul on square sizes 256, 512, 1024, 2048 and of grouped matmul (8 groups, each
[512x512] @ [512x2048]) next to a plain GEMM of the same total work, per backend. Medians after a
warm-up run. The js backend runs every size by default (about a minute); --js-sizes narrows it.
--json prints one JSON object: {"peakGflops", "results": [{"backend", "name", "gflops"}]}.`,
  elementwise: `moe bench elementwise [--json] [--backend js|native]

GB/s of add, broadcast add, mul, exp, gelu, sum, softmax and layer norm on 4M float32 values,
against a plain memory copy measured in the same run.`,
  decode: BENCH_DECODE_HELP,
  serve: BENCH_SERVE_HELP,
  'cost-model': BENCH_COST_MODEL_HELP,
  'expert-cache': BENCH_EXPERT_CACHE_HELP,
  'moe-layer': `moe bench moe-layer [--json] [--tokens 4096] [--experts 8,32,128] [--compare-torch] [--rounds N]

The MoE layer at d=512, d_ff=2048, top-2 softmax, GELU experts, float32, T=4096 tokens: forward and
forward+backward tokens per second (medians after warm-up), the share of kernel time in GEMMs, the
same at E = 32 and 128 with the same active parameters per token, peak resident memory, and the
bytes the autograd graph keeps per token for backward next to the minimum it needs.
--compare-torch: the same layer in PyTorch (reference/moe_layer_bench.py, run by /usr/bin/python3
with the same thread count; OPENBLAS_CORETYPE=SkylakeX on AVX-512 CPUs) in rounds interleaved with
moe-ts's (default 3, --rounds N), medians of each; skipped with the reason when torch is absent.
--json prints {"forwardTokensPerSec", "forwardBackwardTokensPerSec", "cases": [...], ...}, with
--compare-torch also "torchForwardTokensPerSec" and "torchForwardBackwardTokensPerSec".`,
  'soft-moe': `moe bench soft-moe [--json] [--experts 16,64,256,512]

One training step (forward, backward, Adam) of the Soft MoE patch classifier of the paper's grid
(batch 256, 4 tokens of 14x14 pixels, one slot per expert, h = floor(784 / n), so the parameters
stay fixed as n grows): the median step time per n after a warm-up step, sizes interleaved (one
step of each n per round), its ratio to the first n, and the kernel profile of one step. Each n
runs twice: with the slots formed (the paper's order; the code path before the token-side
reassociation) and with the formulation the layer picks ('auto').
--json prints {"backend", "batch", "cases": [{"numExperts", "formulation", "ran", "stepMs", "ratio", "kernels", ...}]}.`,
};

/** Said once per process, on stderr, when the fast path is not available. */
function warnSlowPath(): void {
  const name = getBackend().name;
  const info = nativeInfo();
  const fix = 'install OpenBLAS and rebuild: apt-get install libopenblas-dev && npm rebuild moe-ts (or npm run build:native in a checkout)';
  if (name === 'js' && !process.env['MOE_BACKEND']) {
    process.stderr.write(`moe: the native backend is not available (${backendLoadError('native') ?? 'not built'}); running on the slow js backend. To fix: ${fix}\n`);
  } else if (name === 'native' && info?.blas === 'fallback' && info.gemm === 'fallback') {
    process.stderr.write(`moe: the native backend was built without OpenBLAS; matrix products run on the slow portable GEMM. To fix: ${fix}\n`);
  }
}

function positiveInt(flag: string, v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${flag}: '${v}' is not a positive integer`);
  return n;
}

function intOption(flags: Map<string, string[]>, key: string): number | undefined {
  const v = flags.get(key)?.[0];
  return v === undefined ? undefined : positiveInt(`--${key}`, v);
}

function backendsOption(flags: Map<string, string[]>): string[] | undefined {
  const b = flags.get('backend');
  if (!b) return undefined;
  const avail = availableBackends();
  for (const x of b) if (!avail.includes(x)) throw new Error(`--backend ${x} is not available (available: ${avail.join(', ')})`);
  return b;
}

/** `moe bench SUB [options]`: argv starts at 'bench'. */
async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv, new Set(['json', 'help', 'compare-torch', 'cost-model']));
  const [cmd, sub] = args.positional;
  if (cmd !== 'bench') throw new Error(`bench/cli.ts runs 'moe bench ...', not '${cmd ?? ''}'`);
  const help = args.flags.has('help');
  if (!sub || !(sub in BENCH_HELP)) {
    if (help && !sub) { console.log(Object.values(BENCH_HELP).join('\n\n')); return 0; }
    throw new Error(`bench: unknown benchmark '${sub ?? ''}' (available: ${Object.keys(BENCH_HELP).join(', ')})`);
  }
  if (help) { console.log(BENCH_HELP[sub]); return 0; }
  if (sub === 'decode') return benchDecodeCommand(args);
  if (sub === 'serve') return benchServeCommand(args);
  if (sub === 'cost-model') return benchCostModelCommand(args);
  if (sub === 'expert-cache') return benchExpertCacheCommand(args);
  if (sub === 'all-to-all') return benchAllToAllCommand(args);
  if (sub === 'ep-optimizer') return benchEpOptimizerCommand(args);
  const known: Record<string, string[]> = { gemm: ['json', 'backend', 'js-sizes'], elementwise: ['json', 'backend'], 'moe-layer': ['json', 'tokens', 'experts', 'compare-torch', 'rounds'], 'soft-moe': ['json', 'experts'] };
  rejectUnknown(args, known[sub]!, `bench ${sub}`);
  warnSlowPath();
  const json = args.flags.has('json');
  const log = (l: string) => process.stderr.write(`${l}\n`);
  const backends = backendsOption(args.flags);
  if (sub === 'gemm') {
    const js = args.flags.get('js-sizes')?.[0];
    const jsSizes = js?.split(',').map((v) => positiveInt('--js-sizes', v));
    const report = benchGemm({ ...(backends ? { backends } : {}), ...(jsSizes ? { jsSizes } : {}), log });
    if (json) {
      console.log(JSON.stringify({ peakGflops: report.peakGflops, blas: report.blas, results: report.results.map(({ backend, name, gflops, ms, runs }) => ({ backend, name, gflops, ms, runs })) }));
    } else {
      console.log(`\n${formatGemmReport(report)}`);
    }
  } else if (sub === 'moe-layer') {
    const tokens = intOption(args.flags, 'tokens');
    const experts = args.flags.get('experts')?.[0]?.split(',').map((v) => positiveInt('--experts', v));
    const rounds = intOption(args.flags, 'rounds');
    const report = benchMoELayer({ ...(tokens ? { tokens } : {}), ...(experts ? { experts } : {}), ...(rounds ? { rounds } : {}), compareTorch: args.flags.has('compare-torch'), log });
    console.log(json ? JSON.stringify(report) : `\n${formatMoELayerReport(report)}`);
  } else if (sub === 'soft-moe') {
    const experts = args.flags.get('experts')?.[0]?.split(',').map((v) => positiveInt('--experts', v));
    const report = benchSoftMoE({ ...(experts ? { experts } : {}), log });
    console.log(json ? JSON.stringify(report) : `\n${formatSoftMoEReport(report)}`);
  } else {
    const report = benchElementwise({ ...(backends ? { backends } : {}), log });
    console.log(json ? JSON.stringify(report) : `\n${formatBandwidthReport(report)}`);
  }
  return 0;
}

/** Runs `moe bench ...` (argv without node and the script, starting at 'bench'); returns the exit status. */
export async function run(argv: string[]): Promise<number> {
  return reportingErrors(() => main(argv));
}
