// Prints 1 when a C program calling cblas_sgemm compiles and links against -lopenblas, else 0.
// Called by binding.gyp; MOE_NO_OPENBLAS=1 forces 0 (the portable fallback SGEMM).
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

function detect() {
  const off = process.env.MOE_NO_OPENBLAS;
  if (off !== undefined && off !== '' && off !== '0') return 0;
  let dir;
  try {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-blas-'));
    const src = path.join(dir, 'probe.c');
    const exe = path.join(dir, 'probe');
    fs.writeFileSync(src, [
      'void cblas_sgemm(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*, int);',
      'int main(void) {',
      '  float a[1] = {2.0f}, b[1] = {3.0f}, c[1] = {0.0f};',
      '  cblas_sgemm(101, 111, 111, 1, 1, 1, 1.0f, a, 1, b, 1, 0.0f, c, 1);',
      '  return c[0] == 6.0f ? 0 : 1;',
      '}',
      '',
    ].join('\n'));
    const cc = process.env.CC || 'cc';
    execFileSync(cc, [src, '-o', exe, '-lopenblas'], { stdio: 'ignore', timeout: 60000 });
    execFileSync(exe, [], { stdio: 'ignore', timeout: 60000, env: { ...process.env, OPENBLAS_NUM_THREADS: '1' } });
    return 1;
  } catch {
    return 0;
  } finally {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  }
}

process.stdout.write(String(detect()));
