// Bundles moe-ts for browsers (src/browser/index.ts -> dist/browser/moe-ts.js, one ESM file, js backend only) with esbuild.
//
// The Node-only parts stay out: the native backend's registration is replaced by an empty module,
// and node: built-ins (file loaders the browser never calls) by stubs that throw, naming the call,
// if they are reached. `process` is given an empty env (the backend registry reads MOE_BACKEND).
// Usage: node scripts/build-browser.mjs [--out FILE] [--minify]

import { build } from 'esbuild';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const outIdx = args.indexOf('--out');
const outfile = outIdx >= 0 ? args[outIdx + 1] : join(root, 'dist', 'browser', 'moe-ts.js');
if (!outfile) throw new Error('build-browser: --out needs a file name');

const browserOnly = {
  name: 'moe-ts-browser',
  setup(b) {
    b.onResolve({ filter: /\/native\/index\.js$/ }, (a) => (a.importer.endsWith(join('backends', 'defaults.ts')) ? { path: 'native', namespace: 'moe-empty' } : undefined));
    b.onLoad({ filter: /.*/, namespace: 'moe-empty' }, () => ({ contents: '', loader: 'js' }));
    b.onResolve({ filter: /^node:/ }, (a) => ({ path: a.path, namespace: 'moe-node-stub' }));
    b.onLoad({ filter: /.*/, namespace: 'moe-node-stub' }, (a) => ({
      // CommonJS, so that any named import resolves; calling one throws with its name
      contents: `module.exports = new Proxy({}, { get: (_, k) => k === '__esModule' ? false : () => { throw new Error('moe-ts browser build: ${a.path}.' + String(k) + ' is not available in a browser'); } });`,
      loader: 'js',
    }));
  },
};

// tsc emits .js import specifiers for .ts sources: esbuild resolves them to the .ts files itself
const result = await build({
  entryPoints: [join(root, 'src', 'browser', 'index.ts')],
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  outfile,
  minify: args.includes('--minify'),
  sourcemap: false,
  banner: { js: "const process = globalThis.process ?? { env: {} };" },
  plugins: [browserOnly],
  logLevel: 'warning',
  metafile: true,
});
const bytes = Object.values(result.metafile.outputs).reduce((s, o) => s + o.bytes, 0);
console.log(`build-browser: ${outfile} (${(bytes / 1024).toFixed(0)} KiB, ${Object.keys(result.metafile.inputs).length} inputs)`);
