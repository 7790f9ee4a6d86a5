// The dashboard page: fetches the runs' records, draws them with uPlot and canvas heatmaps, and follows /events.
/* global uPlot */
'use strict';

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b', '#e377c2'];
/** Panels of line charts: each line is [source, key, label]; source 'step' = training steps, 'val' = validation evaluations. */
const PANELS = [
  { id: 'loss', title: 'Loss', lines: [['step', 'loss', 'train'], ['val', 'loss', 'val']] },
  { id: 'accuracy', title: 'Accuracy', lines: [['step', 'accuracy', 'train'], ['val', 'accuracy', 'val']] },
  // averaged over layers ('entropy'), per layer ('<layer>.entropy'), per MMoE task gate ('<task>.gateEntropy'),
  // Soft MoE's entropy of the combine-weight share per expert ('combineEntropy')
  { id: 'entropy', title: 'Router entropy (nats) vs log E', match: /(^|\.)(entropy|entropyOfMean|gateEntropy|gateEntropyOfMean|combineEntropy)$/, logE: true },
  { id: 'drop', title: 'Drop fraction (capacity)', lines: [['step', 'dropFraction', 'dropped']], fromZero: true },
  { id: 'loadCV', title: 'Load CV (std / mean of tokens per expert)', lines: [['step', 'loadCV', 'CV'], ['step', 'maxOverMean', 'max / mean']] },
  { id: 'dead', title: 'Dead experts (no token)', lines: [['step', 'deadExperts', 'dead']], fromZero: true },
  { id: 'aux', title: 'Auxiliary losses (load-balance + z-loss)', lines: [['step', 'auxLoss', 'aux']] },
];

const state = { runs: [], plots: new Map(), es: null, updates: 0, pending: false };
// what the browser test reads: live updates applied and steps held per run
window.__dashboard = { get updates() { return state.updates; }, steps: (i) => state.runs[i]?.steps.length ?? 0 };

function setStatus(text, cls) {
  const el = document.getElementById('status');
  el.textContent = text;
  el.className = cls || '';
}

function addRecords(run, records) {
  for (const r of records) {
    if (r.type === 'step' && typeof r.step === 'number') run.steps.push(r);
    else if (r.type === 'eval' && r.split === 'val' && typeof r.step === 'number') run.vals.push(r);
  }
}

/** [x, y] of one line, finite values only. */
function series(run, source, key) {
  const rows = source === 'step' ? run.steps : run.vals;
  const xs = [];
  const ys = [];
  for (const r of rows) {
    const v = r[key];
    if (typeof v === 'number' && Number.isFinite(v)) { xs.push(r.step); ys.push(v); }
  }
  return [xs, ys];
}

/** Lines of a panel chosen by key pattern: every step key matching it, named as logged (entropyOfMean as H(mean P)). */
function matchedLines(run, re) {
  const keys = new Set();
  for (const r of run.steps) for (const k of Object.keys(r)) if (re.test(k) && typeof r[k] === 'number') keys.add(k);
  const label = (k) => k.replace(/combineEntropy$/, 'H(Csum share)').replace(/(gateE|e)ntropyOfMean$/, 'H(mean P)').replace(/(gateE|e)ntropy$/, 'H(G) per token');
  return [...keys].sort().map((k) => ['step', k, label(k)]);
}

function drawPanel(panel) {
  const tables = [];
  const opts = [];
  state.runs.forEach((run, i) => {
    const color = COLORS[i % COLORS.length];
    const before = tables.length;
    for (const [source, key, label] of panel.lines || matchedLines(run, panel.match)) {
      const [xs, ys] = series(run, source, key);
      if (xs.length === 0) continue;
      tables.push([xs, ys]);
      opts.push({ label: `${run.name} ${label}`, stroke: color, width: 1.5, dash: source === 'val' || /OfMean$|maxOverMean/.test(key) ? [6, 4] : undefined, points: { show: source === 'val' }, spanGaps: true });
    }
    if (panel.logE && run.logE !== null && tables.length > before) {
      const xs = run.steps.map((r) => r.step);
      if (xs.length > 0) {
        tables.push([xs, xs.map(() => run.logE)]);
        opts.push({ label: `${run.name} log E = ${run.logE.toFixed(3)}`, stroke: color, width: 1, dash: [2, 3], spanGaps: true });
      }
    }
  });
  const host = document.getElementById(`panel-${panel.id}`);
  const old = state.plots.get(panel.id);
  if (tables.length === 0) {
    if (host) host.hidden = true;
    return;
  }
  const data = uPlot.join(tables);
  const sig = opts.map((o) => o.label).join('|');
  if (old && old.sig === sig) { old.plot.setData(data); return; }
  if (old) old.plot.destroy();
  let el = host;
  if (!el) {
    el = document.createElement('div');
    el.className = 'panel';
    el.id = `panel-${panel.id}`;
    el.innerHTML = `<h3>${panel.title}</h3>`;
    document.getElementById('charts').appendChild(el);
  }
  el.hidden = false;
  const width = Math.max(400, el.clientWidth || 460);
  const plot = new uPlot({ width, height: 240, scales: { x: { time: false }, ...(panel.fromZero ? { y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] } } : {}) }, axes: [{ label: 'step' }, {}], series: [{ label: 'step' }, ...opts] }, data, el);
  state.plots.set(panel.id, { plot, sig });
}

/** Layers whose per-expert load the steps carry: keys 'tokensPerExpert' or '<layer>.tokensPerExpert' with number arrays. */
function loadKeys(run) {
  const keys = new Set();
  for (const r of run.steps) {
    for (const k of Object.keys(r)) if (/(^|\.)tokensPerExpert$/.test(k) && Array.isArray(r[k])) keys.add(k);
  }
  return [...keys];
}

/** Colour of a load ratio (tokens / mean): dark blue at 0, pale at 1 (even), red at 2 and above. */
function heatColor(ratio) {
  const t = Math.max(0, Math.min(1, ratio / 2));
  const lerp = (a, b, u) => Math.round(a + (b - a) * u);
  if (t < 0.5) { const u = t / 0.5; return [lerp(8, 247, u), lerp(48, 247, u), lerp(107, 247, u)]; }
  const u = (t - 0.5) / 0.5;
  return [lerp(247, 165, u), lerp(247, 0, u), lerp(247, 38, u)];
}

function drawHeatmap(run, runIndex, key) {
  const id = `heat-${runIndex}-${key.replace(/[^A-Za-z0-9_-]/g, '_')}`;
  let box = document.getElementById(id);
  if (!box) {
    box = document.createElement('div');
    box.className = 'heat';
    box.id = id;
    const layer = key === 'tokensPerExpert' ? 'all MoE layers' : key.slice(0, -'.tokensPerExpert'.length);
    box.innerHTML = `<h3>${run.name}: ${layer}</h3><canvas></canvas><div class="scale">blue = no tokens, white = even share, red = 2x the mean or more</div>`;
    document.getElementById('heatmaps').appendChild(box);
  }
  const rows = run.steps.filter((r) => Array.isArray(r[key]));
  const E = rows.reduce((m, r) => Math.max(m, r[key].length), 0);
  const canvas = box.querySelector('canvas');
  canvas.width = Math.max(1, rows.length);
  canvas.height = Math.max(1, E);
  const ctx = canvas.getContext('2d');
  const img = ctx.createImageData(canvas.width, canvas.height);
  rows.forEach((r, x) => {
    const load = r[key];
    const mean = load.reduce((a, b) => a + b, 0) / (load.length || 1);
    for (let e = 0; e < E; e++) {
      const [R, G, B] = heatColor(mean > 0 ? (load[e] ?? 0) / mean : 0);
      const o = (e * canvas.width + x) * 4;
      img.data[o] = R; img.data[o + 1] = G; img.data[o + 2] = B; img.data[o + 3] = 255;
    }
  });
  ctx.putImageData(img, 0, 0);
}

function render() {
  state.pending = false;
  document.getElementById('runs').innerHTML = state.runs.map((r, i) => `<span><i style="background:${COLORS[i % COLORS.length]}"></i>${r.name}${r.modelType ? ` (${r.modelType}${r.numExperts ? `, E = ${r.numExperts}` : ''})` : ''}: ${r.steps.length} steps</span>`).join('');
  for (const p of PANELS) drawPanel(p);
  let heat = false;
  state.runs.forEach((run, i) => { for (const k of loadKeys(run)) { drawHeatmap(run, i, k); heat = true; } });
  document.getElementById('heat-title').hidden = !heat;
}

function scheduleRender() {
  if (state.pending) return;
  state.pending = true;
  requestAnimationFrame(render);
}

async function load() {
  if (state.es) { state.es.close(); state.es = null; }
  const res = await fetch('/api/runs');
  if (!res.ok) throw new Error(`/api/runs: HTTP ${res.status}`);
  const body = await res.json();
  state.runs = body.runs.map((r) => ({ name: r.name, modelType: r.modelType, numExperts: r.numExperts, logE: r.logE, steps: [], vals: [] }));
  body.runs.forEach((r, i) => addRecords(state.runs[i], r.records));
  render();
  // the tail starts where the snapshot ended, so no line is missed or repeated
  const es = new EventSource(`/events?from=${body.runs.map((r) => r.position).join(',')}`);
  state.es = es;
  es.onopen = () => setStatus('live', 'live');
  es.addEventListener('records', (ev) => {
    const { run, records } = JSON.parse(ev.data);
    addRecords(state.runs[run], records);
    state.updates++;
    scheduleRender();
  });
  es.addEventListener('reset', (ev) => {
    const run = state.runs[JSON.parse(ev.data).run];
    run.steps = [];
    run.vals = [];
    scheduleRender();
  });
  // the browser's own reconnect would replay from the old positions: start over from a fresh snapshot instead
  es.onerror = () => {
    es.close();
    setStatus('disconnected; retrying…', 'error');
    setTimeout(() => load().catch((e) => setStatus(String(e), 'error')), 2000);
  };
}

load().catch((e) => setStatus(String(e), 'error'));
