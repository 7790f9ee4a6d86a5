#!/usr/bin/env node
// The `moe` launcher. Tensors live in fresh ArrayBuffers; on Linux each first touch of a 4 KiB
// page of a large buffer is a page fault, and on the project's machine a fresh 64 MiB buffer
// costs ~47 ms in faults against ~3 ms to fill a reused one. glibc reads its malloc tunables
// only at start-up, so the launcher re-executes node once with transparent huge pages for
// malloc's mmaps (hugetlb=1) and with freed buffers below 32 MiB kept for reuse (mmap and trim
// thresholds). Set GLIBC_TUNABLES yourself (even to '') or MOE_NO_REEXEC=1 to skip this.

import { spawnSync } from 'node:child_process';

export const MOE_GLIBC_TUNABLES = 'glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967295';

const env = process.env;
if (process.platform === 'linux' && env['GLIBC_TUNABLES'] === undefined && env['MOE_NO_REEXEC'] !== '1') {
  const r = spawnSync(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...env, GLIBC_TUNABLES: MOE_GLIBC_TUNABLES },
  });
  if (r.error) {
    process.stderr.write(`moe: could not re-execute node (${r.error.message}); running without malloc tunables\n`);
    const { run } = await import('./cli.js');
    process.exitCode = await run(process.argv.slice(2));
  } else {
    process.exitCode = r.status ?? (r.signal ? 128 : 1);
  }
} else {
  const { run } = await import('./cli.js');
  process.exitCode = await run(process.argv.slice(2));
}
