// The dashboard page: fetches the runs' records, draws them with uPlot and canvas heatmaps, and follows /events.
/* global uPlot, moeHeat, moeServe */
'use strict';

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b', '#e377c2'];
/** Panels of line charts: each line is [source, key, label]; source 'step' = training steps, 'val' = validation evaluations. */
const PANELS = [
  { id: 'loss', title: 'Loss', lines: [['step', 'loss', 'train'], ['val', 'loss', 'val']] },
  { id: 'accuracy', title: 'Accuracy', lines: [['step', 'accuracy', 'train'], ['val', 'accuracy', 'val']] },
  // averaged over layers ('entropy'), per layer ('<layer>.entropy'), per MMoE task gate ('<task>.gateEntropy'),
  // Soft MoE's entropy of the combine-weight share per expert ('combineEntropy')
  { id: 'entropy', title: 'Router entropy (nats) vs log E', match: /(^|\.)(entropy|entropyOfMean|gateEntropy|gateEntropyOfMean|combineEntropy)$/, logE: true },
  // the rest: the model's layer average ('dropFraction') and each layer's own ('<layer>.dropFraction', from the step's moe field)
  { id: 'drop', title: 'Drop fraction (capacity)', match: /(^|\.)dropFraction$/, fromZero: true },
  { id: 'loadCV', title: 'Load CV (std / mean of tokens per expert)', match: /(^|\.)(loadCV|maxOverMean)$/ },
  { id: 'dead', title: 'Dead experts (no token)', match: /(^|\.)deadExperts$/, fromZero: true },
  // auxLoss is weighted (what the loss adds); per layer, loadBalance and zLoss unweighted
  { id: 'aux', title: 'Auxiliary losses (load-balance + z-loss)', match: /(^|\.)(auxLoss|loadBalance|zLoss)$/ },
];

const state = { runs: [], plots: new Map(), es: null, updates: 0, pending: false };
// what the browser test reads: live updates applied and steps held per run
window.__dashboard = { get updates() { return state.updates; }, steps: (i) => state.runs[i]?.steps.length ?? 0 };

function setStatus(text, cls) {
  const el = document.getElementById('status');
  el.textContent = text;
  el.className = cls || '';
}

/** The step's per-layer entries ({ moe: { layer: { key: value } } }, src/train/layer-log.ts) as flat '<layer>.<key>' fields, which the panels match. */
function flattenLayers(r) {
  const moe = r.moe;
  if (typeof moe !== 'object' || moe === null) return;
  for (const [layer, entry] of Object.entries(moe)) {
    if (typeof entry === 'object' && entry !== null) for (const [k, v] of Object.entries(entry)) r[`${layer}.${k}`] = v;
  }
}

function addRecords(run, records) {
  for (const r of records) {
    if (r.type === 'step' && typeof r.step === 'number') { flattenLayers(r); run.steps.push(r); }
    else if (r.type === 'eval' && r.split === 'val' && typeof r.step === 'number') run.vals.push(r);
    else if (r.type === 'expertLanguage') run.expertLanguage.set(typeof r.layer === 'string' || typeof r.layer === 'number' ? r.layer : 'all layers', r); // the latest per layer
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
  const label = (k) => k.replace(/combineEntropy$/, 'H(Csum share)').replace(/(gateE|e)ntropyOfMean$/, 'H(mean P)').replace(/(gateE|e)ntropy$/, 'H(G) per token')
    .replace(/dropFraction$/, 'dropped').replace(/deadExperts$/, 'dead').replace(/maxOverMean$/, 'max / mean').replace(/loadCV$/, 'CV').replace(/auxLoss$/, 'aux');
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
      // a layer's own line (key '<layer>.<name>') is a lighter, thinner shade of the run's colour; the layer average keeps it plain
      const perLayer = key.includes('.') && !/^[^.]+\.(gateE|e)ntropy(OfMean)?$/.test(key);
      opts.push({ label: `${run.name} ${label}`, stroke: perLayer ? `${color}99` : color, width: perLayer ? 1 : 1.5, dash: source === 'val' || /OfMean$|maxOverMean/.test(key) ? [6, 4] : undefined, points: { show: source === 'val' }, spanGaps: true });
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

function render() {
  state.pending = false;
  document.getElementById('runs').innerHTML = state.runs.map((r, i) => `<span><i style="background:${COLORS[i % COLORS.length]}"></i>${r.name}${r.modelType ? ` (${r.modelType}${r.numExperts ? `, E = ${r.numExperts}` : ''})` : ''}: ${r.steps.length} steps</span>`).join('');
  for (const p of PANELS) drawPanel(p);
  let heat = false;
  let lang = false;
  state.runs.forEach((run, i) => {
    for (const k of moeHeat.loadKeys(run)) { moeHeat.drawHeatmap(run, i, k); heat = true; }
    if (run.expertLanguage.size > 0) { moeHeat.drawExpertLanguage(run, i); lang = true; }
  });
  document.getElementById('heat-title').hidden = !heat;
  document.getElementById('lang-title').hidden = !lang;
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
  // the serve view polls on its own; started once, it survives the runs' reconnects
  if (body.serve && !state.serveStarted) { state.serveStarted = true; moeServe.startServe(body.serve, Number(new URLSearchParams(location.search).get('servePollMs')) || 1000); }
  state.runs = body.runs.map((r) => ({ name: r.name, modelType: r.modelType, numExperts: r.numExperts, logE: r.logE, steps: [], vals: [], expertLanguage: new Map() }));
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
    run.expertLanguage = new Map();
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
