// Prints 1 when a C program calling cblas_sgemm compiles and links against -lopenblas, else 0.
// Called by binding.gyp; MOE_NO_OPENBLAS=1 forces 0 (the portable fallback SGEMM).
'use strict';
const { probe } = require('./detect-lib.cjs');

process.stdout.write(String(probe({
  off: 'MOE_NO_OPENBLAS',
  lib: 'openblas',
  source: [
    'void cblas_sgemm(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*, int);',
    'int main(void) {',
    '  float a[1] = {2.0f}, b[1] = {3.0f}, c[1] = {0.0f};',
    '  cblas_sgemm(101, 111, 111, 1, 1, 1, 1.0f, a, 1, b, 1, 0.0f, c, 1);',
    '  return c[0] == 6.0f ? 0 : 1;',
    '}',
  ],
  runEnv: { OPENBLAS_NUM_THREADS: '1' },
})));
