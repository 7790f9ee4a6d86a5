// `moe predict`: the top classes and their probabilities for images, from a trained image model.

import { rejectUnknown, type ParsedArgs } from './args.js';
import { loadModel, type ClassifierHead } from '../models/load.js';
import { readImageFile } from '../data/image-files.js';
import { narrow, softmax } from '../ops/index.js';
import type { Tensor } from '../tensor/tensor.js';
import { noGrad } from '../tensor/autograd.js';

export const PREDICT_HELP = `moe predict --checkpoint DIR --input FILE [--top N] [--scale 255|1] [--json]

Classifies images with a trained image model (a run directory or its checkpoint/; the optimizer
state is not needed). FILE is told by its contents:
  IDX     MNIST-format ubyte images: [H, W], [N, H, W] or [N, C, H, W] (gzip is fine)
  PNG     one image; RGB(A) becomes gray (ITU-R 601 luma) for a 1-channel model, alpha is ignored
  JSON    one image or a list of images: flat [C*H*W], [H, W] (1 channel) or [C, H, W], or lists of these
Pixel values are 0..255; --scale 1 says that JSON values are already in [0, 1]. Images are not
resized: another size is an error. The preprocessing of the model's training (scaling, and the
dataset's mean/std when data.normalize was on) is applied as in training.
Prints, per image, the top N classes (default 5) with their probabilities; --json prints
{"checkpoint", "predictions": [{"image", "heads": [{"head", "top": [{"class", "label", "probability"}]}]}]}.`;

interface Ranked {
  class: number;
  label: string | null;
  probability: number;
}

/** The `top` most probable classes of one row, ties to the lower class index. */
function rank(row: Float32Array, head: ClassifierHead, top: number): Ranked[] {
  const order = Array.from(row.keys()).sort((a, b) => row[b]! - row[a]! || a - b).slice(0, top);
  return order.map((c) => ({ class: c, label: head.classNames?.[c] ?? null, probability: row[c]! }));
}

export async function predictCommand(args: ParsedArgs): Promise<number> {
  rejectUnknown(args, ['checkpoint', 'input', 'top', 'scale', 'json', 'help'], 'predict');
  const dir = args.flags.get('checkpoint')?.[0];
  const input = args.flags.get('input')?.[0];
  if (!dir) throw new Error('predict: --checkpoint DIR is required (a run directory or its checkpoint/)');
  if (!input) throw new Error('predict: --input FILE is required (IDX, PNG or JSON images)');
  const topRaw = args.flags.get('top')?.[0] ?? '5';
  const top = Number(topRaw);
  if (!Number.isInteger(top) || top < 1) throw new Error(`predict: --top must be a positive integer, got '${topRaw}'`);
  const scaleRaw = args.flags.get('scale')?.[0] ?? '255';
  if (scaleRaw !== '255' && scaleRaw !== '1') throw new Error(`predict: --scale must be 255 (pixel values 0..255) or 1 (values in [0, 1]), got '${scaleRaw}'`);

  const m = loadModel(dir);
  if (!m.input || m.heads.length === 0) throw new Error(`predict: ${m.dir} holds a ${m.config.model.type} (${m.task}), not an image classifier`);
  const file = readImageFile(input, m.input);
  const scale = file.format === 'json' ? Number(scaleRaw) : 255;
  if (file.format !== 'json' && args.flags.has('scale')) throw new Error(`predict: --scale applies to JSON input only; ${input} is ${file.format.toUpperCase()} (pixel values 0..255)`);
  let x: Tensor;
  try {
    x = m.preprocess(file.pixels, { scale });
  } catch (e) {
    throw new Error(`predict: ${input}: ${(e as Error).message}${scale === 255 && file.format === 'json' ? ' (values in [0, 1]? pass --scale 1)' : ''}`, { cause: e });
  }

  // batches bound the activations' memory for long IDX files; probabilities per head, [n, classes]
  const batch = 256;
  const probs = m.heads.map((head) => new Float32Array(file.n * head.classes));
  for (let s = 0; s < file.n; s += batch) {
    const rows = Math.min(batch, file.n - s);
    m.logits(narrow(x, 0, s, rows)).forEach((l, h) => {
      probs[h]!.set(noGrad(() => softmax(l, -1)).data, s * m.heads[h]!.classes);
    });
  }

  const predictions = Array.from({ length: file.n }, (_, i) => ({
    image: i,
    heads: m.heads.map((head, h) => ({ head: head.name, top: rank(probs[h]!.subarray(i * head.classes, (i + 1) * head.classes), head, Math.min(top, head.classes)) })),
  }));
  if (args.flags.has('json')) {
    console.log(JSON.stringify({ checkpoint: m.dir, predictions }));
    return 0;
  }
  const many = m.heads.length > 1;
  for (const p of predictions) {
    for (const h of p.heads) {
      const items = h.top.map((r) => `${r.label ?? `class ${r.class}`} ${(100 * r.probability).toFixed(2)}%`);
      console.log(`image ${p.image}${many ? ` ${h.head}` : ''}: ${items.join(', ')}`);
    }
  }
  return 0;
}
