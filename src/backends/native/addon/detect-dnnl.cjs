// Prints 1 when a C program calling oneDNN (dnnl.h: dnnl_version) compiles, links against -ldnnl
// and runs, else 0. Called by binding.gyp like detect-blas.cjs; MOE_NO_DNNL=1 forces 0 (OpenBLAS or
// the portable SGEMM then run every product).
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

function detect() {
  const off = process.env.MOE_NO_DNNL;
  if (off !== undefined && off !== '' && off !== '0') return 0;
  let dir;
  try {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-dnnl-'));
    const src = path.join(dir, 'probe.c');
    const exe = path.join(dir, 'probe');
    // The matmul primitive (what gemm_dnnl.cc uses) appeared in oneDNN 1.1; the header check keeps
    // an older or mismatched install from breaking the addon's build instead of being skipped.
    fs.writeFileSync(src, [
      '#include <oneapi/dnnl/dnnl.h>',
      '#if DNNL_VERSION_MAJOR < 2',
      '#error "oneDNN 2.x or newer is needed"',
      '#endif',
      'int main(void) {',
      '  const dnnl_version_t* v = dnnl_version();',
      '  dnnl_engine_t e;',
      '  if (dnnl_engine_create(&e, dnnl_cpu, 0) != dnnl_success) return 1;',
      '  dnnl_engine_destroy(e);',
      '  return v->major >= 2 ? 0 : 1;',
      '}',
      '',
    ].join('\n'));
    const cc = process.env.CC || 'cc';
    execFileSync(cc, [src, '-o', exe, '-ldnnl'], { stdio: 'ignore', timeout: 60000 });
    execFileSync(exe, [], { stdio: 'ignore', timeout: 60000, env: { ...process.env, OMP_NUM_THREADS: '1' } });
    return 1;
  } catch {
    return 0;
  } finally {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  }
}

process.stdout.write(String(detect()));
