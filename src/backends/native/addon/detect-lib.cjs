// The probe behind detect-blas.cjs and detect-dnnl.cjs: compiles a small C program against a
// library, links it, runs it, and answers 1 when all three work, else 0; an environment variable
// set to anything but '' or '0' answers 0 without trying (the build leaves the library out).
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

/** @param {{ off: string, lib: string, source: string[], runEnv?: Record<string, string> }} p */
function probe(p) {
  const off = process.env[p.off];
  if (off !== undefined && off !== '' && off !== '0') return 0;
  let dir;
  try {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), `moe-${p.lib}-`));
    const src = path.join(dir, 'probe.c');
    const exe = path.join(dir, 'probe');
    fs.writeFileSync(src, [...p.source, ''].join('\n'));
    const cc = process.env.CC || 'cc';
    execFileSync(cc, [src, '-o', exe, `-l${p.lib}`], { stdio: 'ignore', timeout: 60000 });
    execFileSync(exe, [], { stdio: 'ignore', timeout: 60000, env: { ...process.env, ...(p.runEnv ?? {}) } });
    return 1;
  } catch {
    return 0;
  } finally {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  }
}

module.exports = { probe };
