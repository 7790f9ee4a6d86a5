// The dashboard's serve view: polls /api/serve (moe serve's /metrics, summed up by the dashboard) and draws live expert load and expert-cache hit rates per layer.
/* global uPlot, moeHeat */
'use strict';

/** Snapshots kept (one per poll): the charts show the last this many intervals. */
const SERVE_KEEP = 600;
const serveState = { snaps: [], plot: null, plotSig: '', polls: 0, error: null };
window.__serve = { get polls() { return serveState.polls; }, get error() { return serveState.error; } };

/** What changed between two cumulative snapshots: tokens per expert per layer, cache hits and misses per layer. */
function serveDelta(prev, cur) {
  const load = {};
  for (const [layer, row] of Object.entries(cur.expertTokens)) {
    const before = prev?.expertTokens[layer] ?? [];
    // a counter that went down means the server restarted: everything is new
    const d = row.map((v, e) => (v >= (before[e] ?? 0) ? v - (before[e] ?? 0) : v));
    if (d.some((v) => v > 0)) load[layer] = d;
  }
  const cache = {};
  for (const [layer, c] of Object.entries(cur.cache)) {
    const p = prev?.cache[layer] ?? { hits: 0, misses: 0 };
    const hits = c.hits >= p.hits ? c.hits - p.hits : c.hits;
    const misses = c.misses >= p.misses ? c.misses - p.misses : c.misses;
    if (hits + misses > 0) cache[layer] = hits / (hits + misses);
  }
  return { load, cache };
}

function drawServe(url) {
  const snaps = serveState.snaps;
  const cur = snaps[snaps.length - 1];
  const box = document.getElementById('serve');
  box.hidden = false;
  const info = cur ? `${cur.generationTokens ?? '?'} tokens generated, ${cur.runningSequences ?? '?'} running, ${cur.queueDepth ?? '?'} queued` : '';
  box.querySelector('h2').textContent = `moe serve ${url}`;
  box.querySelector('.info').textContent = serveState.error ? `not reachable: ${serveState.error}` : info;
  box.querySelector('.info').className = serveState.error ? 'info error' : 'info';
  box.querySelector('.missing').textContent = cur && cur.missing.length > 0 ? `not exposed by this server: ${cur.missing.join('; ')}` : '';
  // per layer, one heatmap column per poll interval in which tokens were routed
  const steps = [];
  const hit = new Map(); // layer -> [x, rate]
  for (let i = 1; i < snaps.length; i++) {
    const d = serveDelta(snaps[i - 1], snaps[i]);
    const row = { step: i };
    for (const [layer, v] of Object.entries(d.load)) row[`layer ${layer}.tokensPerExpert`] = v;
    if (Object.keys(d.load).length > 0) steps.push(row);
    for (const [layer, r] of Object.entries(d.cache)) { if (!hit.has(layer)) hit.set(layer, [[], []]); hit.get(layer)[0].push(i); hit.get(layer)[1].push(r); }
  }
  const run = { name: 'serve', steps };
  for (const k of moeHeat.loadKeys(run)) moeHeat.drawHeatmap(run, 's', k, 'serve-heat');
  // cumulative share per expert, as text: what the heatmap's colours stand for
  const shares = cur ? Object.entries(cur.expertTokens).map(([layer, row]) => {
    const total = row.reduce((a, b) => a + b, 0);
    return `layer ${layer}: ${row.map((v, e) => `${e}:${total > 0 ? (100 * v / total).toFixed(0) : 0}%`).join(' ')}`;
  }) : [];
  box.querySelector('.shares').textContent = shares.join('\n');
  const cacheLine = cur ? Object.entries(cur.cache).map(([layer, c]) => `layer ${layer}: ${c.hits} hits, ${c.misses} misses (${c.hits + c.misses > 0 ? (100 * c.hits / (c.hits + c.misses)).toFixed(1) : '-'}% hits)`) : [];
  box.querySelector('.cache').textContent = cacheLine.join('\n');
  const layers = [...hit.keys()].sort((a, b) => Number(a) - Number(b));
  const host = box.querySelector('.hits');
  if (layers.length === 0) { host.hidden = true; return; }
  host.hidden = false;
  const data = uPlot.join(layers.map((l) => hit.get(l)));
  const sig = layers.join('|');
  if (serveState.plot && serveState.plotSig === sig) { serveState.plot.setData(data); return; }
  if (serveState.plot) serveState.plot.destroy();
  const colors = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b', '#e377c2'];
  serveState.plot = new uPlot({
    width: Math.max(400, host.clientWidth || 460), height: 220, scales: { x: { time: false }, y: { range: [0, 1] } },
    axes: [{ label: 'poll' }, {}],
    series: [{ label: 'poll' }, ...layers.map((l, i) => ({ label: `layer ${l} hit rate`, stroke: colors[i % colors.length], width: 1.5, spanGaps: true }))],
  }, data, host);
  serveState.plotSig = sig;
}

/** Polls /api/serve every intervalMs while the page is open. */
function startServe(url, intervalMs) {
  const tick = async () => {
    try {
      const res = await fetch('/api/serve');
      const body = await res.json();
      if (!res.ok) throw new Error(body.error || `HTTP ${res.status}`);
      serveState.error = null;
      serveState.snaps.push(body);
      if (serveState.snaps.length > SERVE_KEEP) serveState.snaps.shift();
    } catch (e) {
      serveState.error = String(e.message || e);
    }
    serveState.polls++;
    drawServe(url);
    setTimeout(tick, intervalMs);
  };
  tick();
}

window.moeServe = { startServe };
