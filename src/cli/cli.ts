// The `moe` command: parsing and dispatch (src/cli/main.ts launches it).

import { readFileSync } from 'node:fs';
import { parseArgs, rejectUnknown, reportingErrors, type ParsedArgs } from './args.js';
import { getBackend, availableBackends, backendLoadError } from '../index.js';
import { nativeInfo } from '../backends/native/index.js';
import { experimentCommand, experimentHelp } from './experiment-commands.js';
import { predictCommand, PREDICT_HELP } from './predict-command.js';
import { createCommand, CREATE_HELP } from './create-command.js';
import { convertCommand, CONVERT_HELP } from './convert-command.js';
import { trainCommand, evalCommand, inspectCommand, trainHelp, plotCommand, PLOT_HELP } from './train-commands.js';
import { generateCommand, GENERATE_HELP } from './generate-command.js';
import { EVAL_HELP, INSPECT_HELP } from './model-commands.js';
import { serveCommand, SERVE_HELP } from './serve-command.js';
import { dashboardCommand, DASHBOARD_HELP } from '../dashboard/command.js';
import { simulateCommand, SIMULATE_HELP } from './parallel-commands.js';

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
  experiment continual|straight-through|depth|depth-causal|attention-moe [--quick]   the MoE variants (docs/variants.md)
  experiment topology-routing                   device-limited routing and the topology loss (docs/results/topology-routing.md)
  bench gemm [--json] [--backend js|native]     GFLOP/s of matmul and grouped matmul vs the measured FMA peak
  bench elementwise [--json] [--backend ...]    GB/s of elementwise and reduction kernels on 4M floats
  bench moe-layer [--json] [--tokens N]         tokens/s of the MoE layer (E = 8, 32, 128), GEMM share, memory
  bench soft-moe [--json] [--experts 16,512]    Soft MoE classifier step time as n grows at fixed parameters
  bench decode --model M [--json]               batch-1 prefill/decode tokens/s of a MoE LM vs the bandwidth floor
  bench cost-model --model M [--batch 1,2,4]   fit time per step = bytes / bandwidth + FLOPs / throughput
  bench serve --model M [--clients 1,4,16]      moe serve under N concurrent streaming clients: tokens/s, TTFT, TPOT
  bench all-to-all [--workers 1,2,4]            expert-parallel exchange on worker threads: bytes, compute vs exchange time
  bench ep-optimizer [--workers 1,2]            optimizer state bytes on the main thread vs the workers, step times
  simulate ep --trace F [--topology T]          predicted all-to-all time and bytes per link of a routing trace
  simulate ep scaling|check-host                how all-to-all grows with T and devices; the simulator against this host
  info                                          backends, BLAS and threads in use

Options:
  -h, --help     help for any command
  --version      print the version

Environment:
  MOE_BACKEND=js|native   force a backend (default: native when built, else js)
  MOE_NATIVE_THREADS=N    threads of the native backend, its own pool and OpenBLAS alike
                          (an integer from 1 to 1024; default: every core, at most 64)
`;


function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
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
    console.log(d ? `oneDNN ${d.version}: ${d.isa} kernels (${d.impl}${d.implAnyRows ? `; ${d.implAnyRows} with run-time rows` : ''}), ${d.threading} threads: ${d.threads}${d.failures > 0 ? `; ${d.failures} calls failed over to another library: ${d.lastError}` : ''}${d.declined > 0 ? `; ${d.declined} shapes declined (reference kernel only; last ${d.lastDeclined})` : ''}` : 'oneDNN: not linked (libdnnl-dev not found at build, or MOE_NO_DNNL=1)');
    if (d && d.threading === 'OpenMP') {
      const policy = process.env['OMP_WAIT_POLICY'];
      console.log(`oneDNN's OpenMP workers spin ${process.env['GOMP_SPINCOUNT'] ?? (policy ? `as OMP_WAIT_POLICY=${policy} says` : "libgomp's default")} rounds after a product (GOMP_SPINCOUNT; moe-ts sets 10000 when it and OMP_WAIT_POLICY are unset)`);
    }
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
  const args = parseArgs(argv, new Set(['json', 'help', 'version', 'log-y', 'quick', 'normalize-pixels', 'force', 'chat', 'show-routing']));

  const [cmd] = args.positional;
  const help = args.flags.has('help');
  if (args.flags.has('version')) { console.log(version()); return 0; }
  if (!cmd) { console.log(HELP); return help ? 0 : 1; }
  switch (cmd) {
    case 'bench':
      // the benchmarks are a CLI of their own above src/ (bench/cli.ts); main.ts sends `moe bench` there
      throw new Error("bench: run benchmarks through the moe command (src/cli/main.ts) or bench/cli.ts's run(), not src/cli/cli.ts");
    default: {
      const command = COMMANDS.get(cmd);
      if (!command) throw new Error(`unknown command '${cmd}' (run moe --help)`);
      if (help) { console.log(typeof command.help === 'string' ? command.help : command.help(args)); return 0; }
      return command.run(args);
    }
  }
}

export async function run(argv: string[]): Promise<number> {
  return reportingErrors(() => main(argv));
}
