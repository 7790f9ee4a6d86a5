// The browser demo: a Soft MoE digit classifier on a drawing pad, and a byte-level MoE LM whose bytes are coloured by expert.
// Checkpoints (moe train checkpoint directories) come from ?digits=URL&lm=URL, by default ./checkpoints/softmoe and ./checkpoints/byte-lm.
import { fetchCheckpoint, buildFromCheckpoint, classify, generateWithExperts } from './moe-ts.js';

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22'];
const params = new URLSearchParams(location.search);
const status = document.getElementById('status');
const demo = { ready: false, digits: null, lm: null };
window.demo = demo;

function bars(el, values, label) {
  el.innerHTML = '';
  values.forEach((v, i) => {
    const row = document.createElement('div');
    row.innerHTML = `<span style="width: 5em">${label(i)}</span><span class="bar" style="width: ${Math.round(200 * v)}px; background: ${COLORS[i % COLORS.length]}"></span><span>${(100 * v).toFixed(1)}%</span>`;
    el.appendChild(row);
  });
}

/** The pad's 280x280 drawing as 28x28 pixels in [0, 1] (mean of each 10x10 cell). */
function padPixels(pad, size) {
  const d = pad.getContext('2d').getImageData(0, 0, pad.width, pad.height).data;
  const cell = pad.width / size;
  const out = new Float32Array(size * size);
  for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) {
    let s = 0;
    for (let j = 0; j < cell; j++) for (let i = 0; i < cell; i++) s += d[((y * cell + j) * pad.width + x * cell + i) * 4];
    out[y * size + x] = s / (cell * cell * 255);
  }
  return out;
}

demo.classifyPixels = (pixels) => {
  const r = classify(demo.digits, pixels);
  bars(document.getElementById('probs'), r.probs, (i) => `digit ${i}`);
  bars(document.getElementById('experts'), r.expertShare, (i) => `expert ${i}`);
  return r;
};

demo.generate = (prompt, n) => {
  const r = generateWithExperts(demo.lm, prompt, n);
  const text = document.getElementById('text');
  text.innerHTML = '';
  const dec = new TextDecoder();
  r.bytes.forEach((b, i) => {
    const s = document.createElement('span');
    s.textContent = b === 10 ? '\u21b5\n' : dec.decode(Uint8Array.of(b)) || '\ufffd';
    const e = r.experts[i];
    if (e >= 0) { s.style.background = `${COLORS[e % COLORS.length]}55`; s.title = `byte ${b}: expert ${e}`; }
    text.appendChild(s);
  });
  const E = demo.lm.config.numExperts;
  document.getElementById('legend').innerHTML = Array.from({ length: E }, (_, e) => `<span style="background:${COLORS[e % COLORS.length]}55; margin-right: 8px">expert ${e}</span>`).join('');
  return r;
};

async function main() {
  demo.digits = buildFromCheckpoint(await fetchCheckpoint(params.get('digits') ?? './checkpoints/softmoe'));
  demo.lm = buildFromCheckpoint(await fetchCheckpoint(params.get('lm') ?? './checkpoints/byte-lm'));
  const pad = document.getElementById('pad');
  const ctx = pad.getContext('2d');
  ctx.fillStyle = '#000'; ctx.fillRect(0, 0, pad.width, pad.height);
  let down = false;
  const draw = (ev) => {
    if (!down) return;
    const r = pad.getBoundingClientRect();
    ctx.fillStyle = '#fff';
    ctx.beginPath(); ctx.arc(ev.clientX - r.left, ev.clientY - r.top, 12, 0, 2 * Math.PI); ctx.fill();
  };
  pad.addEventListener('pointerdown', (ev) => { down = true; draw(ev); });
  pad.addEventListener('pointermove', draw);
  pad.addEventListener('pointerup', () => { down = false; demo.classifyPixels(padPixels(pad, demo.digits.config.imageSize)); });
  document.getElementById('clear').onclick = () => { ctx.fillStyle = '#000'; ctx.fillRect(0, 0, pad.width, pad.height); };
  document.getElementById('gen').onclick = () => demo.generate(document.getElementById('prompt').value, 40);
  demo.ready = true;
  status.textContent = 'ready: models loaded';
}

main().catch((e) => { status.textContent = String(e); status.className = 'error'; demo.error = String(e); });
