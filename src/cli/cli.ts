// The `moe` command: parsing and dispatch (src/cli/main.ts launches it).

import { readFileSync } from 'node:fs';
import { parseArgs, rejectUnknown, type ParsedArgs } from './args.js';
import { getBackend, availableBackends, backendLoadError } from '../index.js';
import { nativeInfo } from '../backends/native/index.js';
import { benchGemm, formatGemmReport } from '../../bench/gemm.js';
import { benchElementwise, formatBandwidthReport } from '../../bench/elementwise.js';
import { benchMoELayer, formatMoELayerReport } from '../../bench/moe-layer.js';
import { benchSoftMoE, formatSoftMoEReport } from '../../bench/soft-moe.js';
import { experimentCommand, experimentHelp } from './experiment-commands.js';
import { predictCommand, PREDICT_HELP } from './predict-command.js';
import { createCommand, CREATE_HELP } from './create-command.js';
import { convertCommand, CONVERT_HELP } from './convert-command.js';
import { trainCommand, evalCommand, inspectCommand, trainHelp, plotCommand, PLOT_HELP } from './train-commands.js';
import { generateCommand, benchDecodeCommand, GENERATE_HELP, BENCH_DECODE_HELP } from './generate-command.js';
import { benchCostModelCommand, BENCH_COST_MODEL_HELP } from './cost-model-command.js';
import { EVAL_HELP, INSPECT_HELP } from './model-commands.js';
import { serveCommand, SERVE_HELP } from './serve-command.js';
import { benchServeCommand, BENCH_SERVE_HELP } from './bench-serve-command.js';
import { dashboardCommand, DASHBOARD_HELP } from '../dashboard/command.js';
import { benchAllToAllCommand, simulateCommand, BENCH_ALL_TO_ALL_HELP, SIMULATE_HELP } from './parallel-commands.js';

const HELP = `moe: Mixture-of-Experts in TypeScript

Usage: moe <command> [options]

Commands:
  train --config FILE [--set k=v] [--out DIR] [--force]   train a model; ends with the test accuracy
  train --resume RUN [--set k=v] [--out NEW_DIR]   continue a run from its checkpoint
  eval --checkpoint DIR [--split test|val]      evaluate a checkpoint
  inspect DIR                                   parameters (total, active) and per-expert statistics
  create --arch A --preset tiny|small|1b --out DIR [--seed S]   random-init MoE decoder as an HF directory
  convert SRC DST --format hf|gguf [--dtype f32|f16|bf16|q8_0|q4_0]   HF directory / .gguf to HF or GGUF
  generate --model DIR|FILE.gguf --prompt TEXT   stream a MoE LM's continuation (KV cache; --json, --show-routing)
  generate --checkpoint DIR [--prompt TEXT]     sample text from a byte-level language model
  serve --model DIR|FILE.gguf [--port P] [--max-batch N]   OpenAI-compatible HTTP server (continuous batching)
  plot RUN_DIR... --out FILE [--metric loss]    one curve per run from metrics.jsonl, to SVG and PNG
  dashboard RUN_DIR... [--port P] [--host H]   live web page of runs: loss, accuracy, routing
  predict --checkpoint DIR --input FILE [--top N] [--json]   top classes of images (IDX, PNG, JSON)
  experiment implicit-bias|l2-norm|inference-cost [--quick]   the Soft MoE paper's studies (docs/results/)
  experiment multilingual specialisation|stability|rare|pareto|hierarchical [--quick]   seed 002's study
  experiment continual|straight-through|depth [--quick]   the MoE variants (docs/variants.md)
  bench gemm [--json] [--backend js|native]     GFLOP/s of matmul and grouped matmul vs the measured FMA peak
  bench elementwise [--json] [--backend ...]    GB/s of elementwise and reduction kernels on 4M floats
  bench moe-layer [--json] [--tokens N]         tokens/s of the MoE layer (E = 8, 32, 128), GEMM share, memory
  bench soft-moe [--json] [--experts 16,512]    Soft MoE classifier step time as n grows at fixed parameters
  bench decode --model M [--json]               batch-1 prefill/decode tokens/s of a MoE LM vs the bandwidth floor
  bench cost-model --model M [--batch 1,2,4]   fit time per step = bytes / bandwidth + FLOPs / throughput
  bench serve --model M [--clients 1,4,16]      moe serve under N concurrent streaming clients: tokens/s, TTFT, TPOT
  bench all-to-all [--workers 1,2,4]            expert-parallel exchange on worker threads: bytes, compute vs exchange time
  simulate ep --trace F [--topology T]          predicted all-to-all time and bytes per link of a routing trace
  info                                          backends, BLAS and threads in use

Options:
  -h, --help     help for any command
  --version      print the version

Environment:
  MOE_BACKEND=js|native   force a backend (default: native when built, else js)
  MOE_NATIVE_THREADS=N    threads of the native backend, its own pool and OpenBLAS alike
                          (an integer from 1 to 1024; default: every core, at most 64)
`;

const BENCH_HELP: Record<string, string> = {
  'all-to-all': BENCH_ALL_TO_ALL_HELP,
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

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

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

const INFO_HELP = 'moe info [--json]: the backend in use, and the native backend\'s threads (its pool and OpenBLAS, as in force), BLAS build and vector ISA; MOE_NATIVE_THREADS sets the threads';

function infoCommand(args: ParsedArgs): number {
  rejectUnknown(args, ['json', 'help'], 'info');
  const info = nativeInfo();
  const backend = getBackend();
  if (args.flags.has('json')) {
    console.log(JSON.stringify({ backend: backend.name, available: availableBackends(), native: info ?? { error: backendLoadError('native') ?? 'not loaded' } }));
    return 0;
  }
  console.log(`backend in use: ${backend.name} (${backend.info})`);
  console.log(`available: ${availableBackends().join(', ')}`);
  if (info) {
    const from = info.threadsFrom === 'cores' ? 'the core count; MOE_NATIVE_THREADS unset' : `MOE_NATIVE_THREADS=${process.env['MOE_NATIVE_THREADS']}`;
    console.log(`native pool threads: ${info.threads} (${from})`);
    const capped = info.threadsFrom === 'MOE_NATIVE_THREADS' && info.blasThreads < info.threads ? `; fewer than asked: this OpenBLAS build caps threads (${/MAX_THREADS=\d+/.exec(info.blasConfig)?.[0] ?? 'MAX_THREADS'})` : '';
    console.log(info.blas === 'openblas' ? `OpenBLAS threads: ${info.blasThreads} (openblas_get_num_threads${capped})` : 'OpenBLAS: not linked (portable GEMM on the pool threads)');
    console.log(`BLAS: ${info.blasConfig}`);
    if (info.blas === 'openblas') console.log(`OpenBLAS workers spin 2^${process.env['OPENBLAS_THREAD_TIMEOUT']} cycles after a call (OPENBLAS_THREAD_TIMEOUT; moe-ts sets 20 when it is unset)`);
    console.log(`GEMM library: ${info.gemm} (${info.gemmForced ? 'forced by MOE_GEMM' : 'the default; MOE_GEMM=onednn|openblas|fallback forces one'})`);
    const d = info.onednn;
    console.log(d ? `oneDNN ${d.version}: ${d.isa} kernels (${d.impl}), ${d.threading} threads: ${d.threads}${d.failures > 0 ? `; ${d.failures} calls failed over to another library: ${d.lastError}` : ''}` : 'oneDNN: not linked (libdnnl-dev not found at build, or MOE_NO_DNNL=1)');
    console.log(`vector ISA: ${info.simd}`);
  } else {
    console.log(`native: not loaded (${backendLoadError('native') ?? 'unknown reason'})`);
  }
  return 0;
}

/** Every command but bench: its --help text (or a function of the arguments, for train's per-topic help) and what runs it. */
const COMMANDS = new Map<string, { help: string | ((args: ParsedArgs) => string); run: (args: ParsedArgs) => number | Promise<number> }>([
  ['train', { help: (args) => trainHelp(args.positional[1]), run: trainCommand }],
  ['eval', { help: EVAL_HELP, run: evalCommand }],
  ['inspect', { help: INSPECT_HELP, run: inspectCommand }],
  ['experiment', { help: experimentHelp(), run: experimentCommand }],
  ['generate', { help: GENERATE_HELP, run: generateCommand }],
  ['serve', { help: SERVE_HELP, run: serveCommand }],
  ['create', { help: CREATE_HELP, run: createCommand }],
  ['convert', { help: CONVERT_HELP, run: convertCommand }],
  ['plot', { help: PLOT_HELP, run: plotCommand }],
  ['dashboard', { help: DASHBOARD_HELP, run: dashboardCommand }],
  ['predict', { help: PREDICT_HELP, run: predictCommand }],
  ['info', { help: INFO_HELP, run: infoCommand }],
  ['simulate', { help: SIMULATE_HELP, run: simulateCommand }],
]);

async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv, new Set(['json', 'help', 'version', 'log-y', 'quick', 'normalize-pixels', 'force', 'chat', 'show-routing', 'compare-torch']));

  const [cmd, sub] = args.positional;
  const help = args.flags.has('help');
  if (args.flags.has('version')) { console.log(version()); return 0; }
  if (!cmd) { console.log(HELP); return help ? 0 : 1; }
  switch (cmd) {
    case 'bench': {
      if (!sub || !(sub in BENCH_HELP)) {
        if (help && !sub) { console.log(Object.values(BENCH_HELP).join('\n\n')); return 0; }
        throw new Error(`bench: unknown benchmark '${sub ?? ''}' (available: ${Object.keys(BENCH_HELP).join(', ')})`);
      }
      if (help) { console.log(BENCH_HELP[sub]); return 0; }
      if (sub === 'decode') return benchDecodeCommand(args);
      if (sub === 'serve') return benchServeCommand(args);
      if (sub === 'cost-model') return benchCostModelCommand(args);
      if (sub === 'all-to-all') return benchAllToAllCommand(args);
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
    default: {
      const command = COMMANDS.get(cmd);
      if (!command) throw new Error(`unknown command '${cmd}' (run moe --help)`);
      if (help) { console.log(typeof command.help === 'string' ? command.help : command.help(args)); return 0; }
      return command.run(args);
    }
  }
}

export async function run(argv: string[]): Promise<number> {
  try {
    return await main(argv);
  } catch (e) {
    process.stderr.write(`moe: ${(e as Error).message}\n`);
    return 2;
  }
}
