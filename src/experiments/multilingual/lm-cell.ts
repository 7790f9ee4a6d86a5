// One cell of the multilingual scaling studies: a byte LM trained on the labelled UDHR corpus with
// the shared trainer, then its validation loss per language, its parameter counts and its compute.
//
// B = batch, T = seqLen.

import { ByteLM, type LMConfig } from '../../models/lm.js';
import { HierarchicalRouter } from '../../moe/routers/hierarchical.js';
import { Tensor } from '../../tensor/tensor.js';
import { Rng, deriveSeed } from '../../tensor/rng.js';
import { noGrad } from '../../tensor/autograd.js';
import { add } from '../../ops/index.js';
import { Adam } from '../../train/optim.js';
import { warmupCosine } from '../../train/schedule.js';
import { train, type StepOutput, type TaskBatch, type TrainTask } from '../../train/trainer.js';
import { lmLoss } from '../../train/lm-task.js';
import { labelIds, languageWindows, sampleLanguageBatch, type LanguageBatch, type MultilingualCorpus } from '../../data/multilingual-corpus.js';
import { activeNonEmbeddingParameters, inferenceFlopsPerToken, lmCompute, trainingFlops } from './flops.js';

export interface TrainSpec {
  steps: number;
  batchSize: number;
  seqLen: number;
  /** Peak learning rate of the warmup-cosine schedule (warmup = 5% of steps, floor lr / 10). */
  lr: number;
  /** Validation windows per language at most (non-overlapping, from the start of the split). */
  evalWindowsPerLanguage: number;
}

export interface CellRecord {
  /** Cell name without the seed, e.g. 'moe-d64'. */
  name: string;
  seed: number;
  model: Partial<LMConfig>;
  totalParams: number;
  activeParams: number;
  /** Kaplan's N: active parameters without the byte embedding and the output head. */
  activeNonEmbedding: number;
  trainTokens: number;
  /** 3 * forward FLOPs per token at the training window * trained tokens (flops.ts). */
  trainFlops: number;
  /** Forward FLOPs per generated token with a KV cache over a window of seqLen (flops.ts). */
  inferenceFlopsPerToken: number;
  /** Router multiply-adds per token, summed over blocks (0 for dense). */
  routerMacsPerToken: number;
  trainSeconds: number;
  /** Mean training loss (nats per byte) over the last 10% of steps. */
  finalTrainLoss: number;
  /** Validation loss (nats per byte) per language code. */
  val: Record<string, number>;
  /** Unweighted mean of `val` over languages. */
  meanVal: number;
}

/**
 * The trainer's view of the corpus: language-labelled windows. Supervised hierarchical routers get
 * each token's cluster = its language family's index mod G (families outnumber the clusters a
 * power-of-two E allows, so several families share a cluster; a family never spans two).
 */
class CorpusTask implements TrainTask {
  readonly batchesPerEpoch: number;
  private readonly family: Int32Array;
  private readonly routers: HierarchicalRouter[];

  constructor(readonly model: ByteLM, private readonly corpus: MultilingualCorpus, private readonly spec: TrainSpec, private readonly seed: number) {
    this.batchesPerEpoch = spec.steps;
    this.family = labelIds(corpus, 'family');
    this.routers = model.moeLayers().flatMap((m) => (m.router instanceof HierarchicalRouter && m.router.supervised ? [m.router] : []));
  }

  *batches(epoch: number): Generator<TaskBatch> {
    const rng = new Rng(deriveSeed(this.seed, 7, epoch));
    for (let s = 0; s < this.batchesPerEpoch; s++) yield sampleLanguageBatch(this.corpus, { batchSize: this.spec.batchSize, seqLen: this.spec.seqLen, rng });
  }

  step(batch: TaskBatch): StepOutput {
    const T = this.spec.seqLen;
    if (this.routers.length > 0) {
      const lang = (batch as LanguageBatch).lang;
      for (const r of this.routers) {
        const labels = new Int32Array(lang.length * T);
        lang.forEach((l, b) => labels.fill(this.family[l]! % r.groups, b * T, (b + 1) * T));
        r.setClusterLabels(labels);
      }
    }
    const { logits, auxLoss } = this.model.forward(batch.x);
    const taskLoss = lmLoss(logits, batch.y);
    return { loss: auxLoss ? add(taskLoss, auxLoss) : taskLoss, values: { taskLoss: taskLoss.item() } };
  }

  evaluate(): null {
    return null;
  }

  /** Evaluation routes by the gates alone: labels are training-time supervision. */
  clearLabels(): void {
    for (const r of this.routers) r.setClusterLabels(null);
  }
}

/** Validation loss (nats per byte) per language code, over up to `maxWindows` windows each, in eval mode without gradients. */
export function perLanguageLoss(model: ByteLM, corpus: MultilingualCorpus, seqLen: number, maxWindows: number, batch = 32): Record<string, number> {
  const w = languageWindows(corpus, 'val', seqLen, maxWindows);
  const T = seqLen;
  const out: Record<string, number> = {};
  const wasTraining = model.training;
  model.eval();
  try {
    noGrad(() => {
      for (const l of corpus.languages) {
        const idx: number[] = [];
        w.lang.forEach((id, i) => { if (id === l.id) idx.push(i); });
        if (idx.length === 0) throw new Error(`multilingual: language '${l.code}' has ${l.val.length} validation bytes, fewer than seqLen + 1 = ${T + 1}`);
        let total = 0;
        for (let s = 0; s < idx.length; s += batch) {
          const chunk = idx.slice(s, s + batch);
          const x = new Int32Array(chunk.length * T); // [B, T]
          const y = new Int32Array(chunk.length * T); // [B, T]
          chunk.forEach((i, b) => {
            x.set(w.x.subarray(i * T, (i + 1) * T), b * T);
            y.set(w.y.subarray(i * T, (i + 1) * T), b * T);
          });
          const { logits } = model.forward(new Tensor(x, [chunk.length, T]));
          total += lmLoss(logits, new Tensor(y, [chunk.length, T])).item() * chunk.length;
        }
        out[l.code] = total / idx.length;
      }
    });
  } finally {
    model.train(wasTraining);
  }
  return out;
}

/** Trains one (config, seed) cell and measures it; the model is returned for further measurement. */
export function trainCell(name: string, modelConfig: Partial<LMConfig>, seed: number, corpus: MultilingualCorpus, spec: TrainSpec): { record: CellRecord; model: ByteLM } {
  const model = new ByteLM({ ...modelConfig, maxSeqLen: spec.seqLen }, seed);
  const task = new CorpusTask(model, corpus, spec, seed);
  const warmupSteps = Math.max(1, Math.round(spec.steps * 0.05));
  const losses: number[] = [];
  const result = train(task, {
    epochs: 1, optimizer: new Adam(model.namedParameters(), { lr: spec.lr }),
    schedule: warmupCosine({ lr: spec.lr, warmupSteps, totalSteps: Math.max(warmupSteps + 1, spec.steps), minLr: spec.lr / 10 }),
    clipNorm: 1, seed, metricsFile: null, checkpointDir: null, config: modelConfig, evalEvery: 0, progress: null,
    onStep: (v) => losses.push(v['taskLoss']!),
  });
  task.clearLabels();
  const tail = losses.slice(-Math.max(1, Math.round(losses.length / 10)));
  const val = perLanguageLoss(model, corpus, spec.seqLen, spec.evalWindowsPerLanguage);
  const vals = Object.values(val);
  const cfg = { ...modelConfig, maxSeqLen: spec.seqLen };
  const trainTokens = spec.steps * spec.batchSize * spec.seqLen;
  return {
    model,
    record: {
      name, seed, model: modelConfig,
      totalParams: model.totalParameters(), activeParams: model.activeParameters(), activeNonEmbedding: activeNonEmbeddingParameters(model),
      trainTokens, trainFlops: trainingFlops(cfg, spec.seqLen, trainTokens), inferenceFlopsPerToken: inferenceFlopsPerToken(cfg, spec.seqLen),
      routerMacsPerToken: lmCompute(cfg, spec.seqLen).macs.router,
      trainSeconds: result.seconds, finalTrainLoss: tail.reduce((a, b) => a + b, 0) / tail.length,
      val, meanVal: vals.reduce((a, b) => a + b, 0) / vals.length,
    },
  };
}
