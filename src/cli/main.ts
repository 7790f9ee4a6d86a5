#!/usr/bin/env node
// The `moe` launcher: runs the command in this very process.
//
// Until issue 9 it re-executed node in a child with glibc malloc tunables (transparent huge pages for
// malloc's mmaps, freed buffers below 32 MiB kept for reuse) to save page faults on fresh tensor
// buffers. The child outlived a killed launcher (kill, kill -9, Popen.terminate()) and kept writing
// the run directory, and the benefit was never shown end to end. Measured on 2026-11-30, `moe train
// --config configs/quickstart.json --set train.epochs=1`, 3 runs each, interleaved, on the shared
// 2-vCPU machine, three sets (load average 2 to 14 from other engineers' jobs, so wall times are noisy):
//   re-exec:       wall 31.0, 41.0, 46.3 | 96.7, 88.7, 59.6 | 25.6, 22.0, 16.1 s;
//                  CPU (user+sys) 23.7, 26.2, 24.3 | 29.7, 29.5, 31.2 | 26.3, 20.5, 23.6 s; minor faults 12.6k-17.4k
//   MOE_NO_REEXEC: wall 38.4, 41.4, 70.0 | 43.4, 109.6, 56.0 | 13.5, 32.6, 18.2 s;
//                  CPU (user+sys) 20.5, 24.5, 30.8 | 28.9, 31.2, 26.9 | 19.8, 26.5, 18.0 s; minor faults 131k-149k
//   medians over all nine: wall 41.0 vs 41.4 s, CPU 26.2 vs 26.5 s
// The tunables cut page faults 8-10x, but the ~120k faults saved are worth an estimated ~0.25 s of a 15 s
// run (about 2 us each; not measured): no difference shows in CPU or wall time. So no re-exec. To use the tunables anyway, set
// them yourself: GLIBC_TUNABLES=<MOE_GLIBC_TUNABLES below> moe train ... (MOE_NO_REEXEC is now ignored).
//
// No signal handlers either: training is synchronous, so a JS handler would only run after it ended.
// SIGINT, SIGTERM and SIGHUP keep their default action (the process ends, status 128 + signal); the
// run directory copes with a kill at any point (its lock is taken over, its log cut back on resume).

/** The malloc tunables the old launcher set; see above for how to set them yourself. */
export const MOE_GLIBC_TUNABLES = 'glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967295';

// `moe bench` goes to the benchmarks' own command line above src/ (bench/cli.ts), so the library
// never imports bench/; every other command to src/cli/cli.ts.
const argv = process.argv.slice(2);
const { run } = argv.find((a) => !a.startsWith('-')) === 'bench' ? await import('../../bench/cli.js') : await import('./cli.js');
process.exitCode = await run(argv);
