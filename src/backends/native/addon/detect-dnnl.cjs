// Prints 1 when a C program calling oneDNN (dnnl.h: dnnl_version) compiles, links against -ldnnl
// and runs, else 0. Called by binding.gyp like detect-blas.cjs; MOE_NO_DNNL=1 forces 0 (OpenBLAS or
// the portable SGEMM then run every product).
'use strict';
const { probe } = require('./detect-lib.cjs');

// The matmul primitive (what gemm_dnnl.cc uses) appeared in oneDNN 1.1; the header check keeps an
// older or mismatched install from breaking the addon's build instead of being skipped.
process.stdout.write(String(probe({
  off: 'MOE_NO_DNNL',
  lib: 'dnnl',
  source: [
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
  ],
  runEnv: { OMP_NUM_THREADS: '1' },
})));
