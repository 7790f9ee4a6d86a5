// Builds the native addon (src/backends/native/addon) with node-gyp. Run by `npm install` (a failure
// only warns: moe-ts then runs on the js backend) and by `npm run build:native` (--strict: fails).

import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const strict = process.argv.includes('--strict');
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const addonDir = join(root, 'src', 'backends', 'native', 'addon');
const addonFile = join(addonDir, 'build', 'Release', 'moe_native.node');
const FIX = 'apt-get install g++ make python3 libopenblas-dev libdnnl-dev && npm rebuild';

function fail(what, detail) {
  if (detail) process.stderr.write(`${detail.trimEnd()}\n`);
  if (strict) {
    process.stderr.write(`moe-ts: building the native addon failed: ${what}\nTo fix: ${FIX}\n`);
    process.exit(1);
  }
  process.stderr.write(
    `moe-ts: warning: building the native addon failed: ${what}\n` +
      'moe-ts will run on the slower js backend.\n' +
      `To fix: ${FIX}\n`,
  );
  process.exit(0);
}

/** node-gyp from this package's node_modules, else the one npm names or bundles. */
function findNodeGyp() {
  const candidates = [
    join(root, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    process.env.npm_config_node_gyp,
    join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ];
  try {
    candidates.push(createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js'));
  } catch {
    // not resolvable from here
  }
  return candidates.find((p) => p && existsSync(p));
}

const nodeGyp = findNodeGyp();
if (!nodeGyp) fail('node-gyp was not found (neither in node_modules nor bundled with npm)');

const args = [nodeGyp, 'rebuild'];
// Headers installed beside the node binary (e.g. Debian's /usr/include/node): no download needed.
const nodeDir = resolve(dirname(process.execPath), '..');
if (existsSync(join(nodeDir, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${nodeDir}`);

const run = spawnSync(process.execPath, args, { cwd: addonDir, encoding: 'utf8', env: process.env, maxBuffer: 64 << 20 });
if (run.error) fail(`could not run node-gyp: ${run.error.message}`);
if (run.status !== 0) {
  const out = `${run.stdout ?? ''}${run.stderr ?? ''}`.split('\n').filter((l) => !l.startsWith('gyp info'));
  fail(`node-gyp exited with status ${run.status}`, out.slice(-25).join('\n'));
}
if (!existsSync(addonFile)) fail(`node-gyp succeeded but ${addonFile} is missing`);

let info;
try {
  info = createRequire(import.meta.url)(addonFile).info();
} catch (e) {
  fail(`the built addon does not load: ${e instanceof Error ? e.message : String(e)}`);
}
const blas = info.blas === 'openblas' ? 'OpenBLAS' : 'the portable fallback SGEMM (OpenBLAS not found)';
const dnnl = info.onednn ? `oneDNN ${info.onednn.version} (${info.onednn.isa}) and ` : '';
process.stdout.write(`moe-ts: native addon built with ${dnnl}${blas}, GEMMs on ${info.gemm ?? 'openblas'}; ${info.threads} threads, ${info.simd} loops\n`);
