// The dashboard's heatmaps, drawn on plain canvases (uPlot has none): expert load over steps per layer, Soft MoE's Csum, and the expert x language matrix.
'use strict';

/** Colour of a ratio to the even share: dark blue at 0, pale at 1 (even), red at 2 and above. */
function heatColor(ratio) {
  const t = Math.max(0, Math.min(1, ratio / 2));
  const lerp = (a, b, u) => Math.round(a + (b - a) * u);
  if (t < 0.5) { const u = t / 0.5; return [lerp(8, 247, u), lerp(48, 247, u), lerp(107, 247, u)]; }
  const u = (t - 0.5) / 0.5;
  return [lerp(247, 165, u), lerp(247, 0, u), lerp(247, 38, u)];
}

/** Per-expert arrays the steps carry: 'tokensPerExpert' (all layers) or '<layer>.tokensPerExpert', and Soft MoE's '<layer>.combineSumPerExpert'. */
function loadKeys(run) {
  const keys = new Set();
  for (const r of run.steps) {
    for (const k of Object.keys(r)) if (/(^|\.)(tokensPerExpert|combineSumPerExpert)$/.test(k) && Array.isArray(r[k])) keys.add(k);
  }
  return [...keys].sort();
}

/** Widest canvas drawn: longer runs are averaged into this many columns (a canvas of 10^5 columns would not add detail). */
const MAX_COLUMNS = 1500;

function heatBox(parent, id, title, note) {
  let box = document.getElementById(id);
  if (!box) {
    box = document.createElement('div');
    box.className = 'heat';
    box.id = id;
    box.innerHTML = `<h3></h3><canvas></canvas><div class="scale"></div>`;
    box.querySelector('h3').textContent = title;
    document.getElementById(parent).appendChild(box);
  }
  box.querySelector('.scale').textContent = note;
  return box;
}

/** One layer's load over steps: rows = experts, columns = steps (or buckets of steps), colour = share / even share. */
function drawHeatmap(run, runIndex, key, parent = 'heatmaps') {
  const soft = key.endsWith('combineSumPerExpert');
  const layer = key.replace(/\.?(tokensPerExpert|combineSumPerExpert)$/, '') || 'all MoE layers';
  const rows = run.steps.filter((r) => Array.isArray(r[key]));
  const E = rows.reduce((m, r) => Math.max(m, r[key].length), 0);
  const cols = Math.min(rows.length, MAX_COLUMNS);
  const first = rows[0]?.step;
  const last = rows[rows.length - 1]?.step;
  const id = `heat-${runIndex}-${key.replace(/[^A-Za-z0-9_-]/g, '_')}`;
  const box = heatBox(parent, id, `${run.name}: ${layer}${soft ? ' (Soft MoE: Csum per expert)' : ''}`,
    `${E} experts (rows, expert 0 on top) x steps ${first}..${last}${cols < rows.length ? ` in ${cols} columns` : ''}: blue = none, white = even share, red = 2x the mean or more`);
  const canvas = box.querySelector('canvas');
  canvas.width = Math.max(1, cols);
  canvas.height = Math.max(1, E);
  const ctx = canvas.getContext('2d');
  const img = ctx.createImageData(canvas.width, canvas.height);
  for (let x = 0; x < cols; x++) {
    // column x covers rows [a, b): the ratio to the mean, averaged over them
    const a = Math.floor((x * rows.length) / cols);
    const b = Math.max(a + 1, Math.floor(((x + 1) * rows.length) / cols));
    for (let e = 0; e < E; e++) {
      let sum = 0;
      for (let i = a; i < b; i++) {
        const load = rows[i][key];
        const mean = load.reduce((s, v) => s + v, 0) / (load.length || 1);
        sum += mean > 0 ? (load[e] ?? 0) / mean : 0;
      }
      const [R, G, B] = heatColor(sum / (b - a));
      const o = (e * canvas.width + x) * 4;
      img.data[o] = R; img.data[o + 1] = G; img.data[o + 2] = B; img.data[o + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
}

/** Checks an expertLanguage record (docs/dashboard.md); returns what is wrong, or null. */
function expertLanguageProblem(r) {
  if (!Array.isArray(r.languages) || r.languages.length === 0 || !r.languages.every((l) => typeof l === 'string')) return 'languages must be a non-empty list of names';
  if (!Array.isArray(r.counts) || r.counts.length === 0) return 'counts must be a list with one row per expert';
  for (const [e, row] of r.counts.entries()) {
    if (!Array.isArray(row) || row.length !== r.languages.length) return `counts[${e}] must have ${r.languages.length} entries (one per language)`;
    if (!row.every((v) => typeof v === 'number' && Number.isFinite(v) && v >= 0)) return `counts[${e}] must hold non-negative numbers`;
  }
  return null;
}

/**
 * The latest expert x language matrix of each layer: rows = experts, columns = languages; a cell
 * is the share of the language's tokens that went to the expert, coloured against the even share
 * 1/E, its count in the tooltip. A table (not a canvas) so the labels are text.
 */
function drawExpertLanguage(run, runIndex) {
  for (const [layer, r] of run.expertLanguage) {
    const id = `lang-${runIndex}-${String(layer).replace(/[^A-Za-z0-9_-]/g, '_')}`;
    let box = document.getElementById(id);
    if (!box) {
      box = document.createElement('div');
      box.className = 'lang';
      box.id = id;
      document.getElementById('languages').appendChild(box);
    }
    const problem = expertLanguageProblem(r);
    const title = `${run.name}: ${layer}${typeof r.step === 'number' ? ` at step ${r.step}` : ''}`;
    if (problem) {
      box.innerHTML = `<h3></h3><div class="error"></div>`;
      box.querySelector('h3').textContent = title;
      box.querySelector('.error').textContent = `expertLanguage record not shown: ${problem}`;
      continue;
    }
    const E = r.counts.length;
    const totals = r.languages.map((_, j) => r.counts.reduce((s, row) => s + row[j], 0));
    const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);
    let html = `<h3>${esc(title)}</h3><table><tr><th>expert</th>${r.languages.map((l) => `<th>${esc(l)}</th>`).join('')}</tr>`;
    for (let e = 0; e < E; e++) {
      html += `<tr><th>${e}</th>`;
      for (let j = 0; j < r.languages.length; j++) {
        const share = totals[j] > 0 ? r.counts[e][j] / totals[j] : 0;
        const [R, G, B] = heatColor(share * E);
        // light text on the dark ends of the scale
        html += `<td style="background: rgb(${R}, ${G}, ${B}); color: ${0.3 * R + 0.6 * G + 0.1 * B < 128 ? '#fff' : '#222'}" title="${esc(r.languages[j])} -> expert ${e}: ${r.counts[e][j]} tokens (${(100 * share).toFixed(1)}%)">${(100 * share).toFixed(0)}</td>`;
      }
      html += '</tr>';
    }
    box.innerHTML = `${html}</table><div class="scale">% of each language's tokens per expert; white = the even share 1/${E}, red = twice it or more, blue = none</div>`;
  }
}

window.moeHeat = { heatColor, loadKeys, drawHeatmap, drawExpertLanguage };
