// The sparse MoE layer, stage by stage (MegaBlocks' split):
//   router(x) -> assignments (token, expert, gate)
//   bins: sort by expert, histogram, capacity (or dropless)
//   permute: gather rows into expert order
//   experts: grouped GEMMs over the actual group sizes
//   unpermute: scatter back, weighted by the gates, summed over each token's experts
// Permute, experts and unpermute run as one op (ops/expert-mlp.ts) so that backward keeps only
// the hidden pre-activations and the indices. Aux losses and metrics stay off the main path.

import { Module } from '../nn/module.js';
import { Tensor } from '../tensor/tensor.js';
import { noGrad } from '../tensor/autograd.js';
import { add, mul, reshape } from '../ops/index.js';
import { ExpertBank, type Activation } from './experts/bank.js';
import { createRouter, type RouterConfig } from './routers/index.js';
import type { Router, Routing } from './routers/types.js';
import { expertCapacity, planDispatch, type DispatchPlan, type DropPolicy } from './permute/bins.js';
import { loadBalanceLoss, sequenceLoadBalanceLoss, zLoss } from './losses/balance.js';
import { routerMetrics, type RouterMetrics } from './metrics.js';
import { checkKeys, checkType } from './config.js';
import { checkInt, takeFlat } from './util.js';

export interface MoELayerConfig {
  /** Token width d. */
  dModel: number;
  /** Hidden width of each expert. */
  dFF: number;
  /** Number of routed experts E. */
  numExperts: number;
  /** Which router and its options (default { type: 'topk', k: 2 }). */
  router?: RouterConfig;
  /** Expert activation (default 'gelu'). */
  activation?: Activation;
  /** Expert biases (default false). */
  bias?: boolean;
  /** Training capacity factor: capacity = ceil(cf * T * k / E). null (default) = dropless. */
  capacityFactor?: number | null;
  /** Evaluation capacity factor (default: the training one). */
  evalCapacityFactor?: number | null;
  /** Which assignments an over-full expert drops: 'position' (later tokens, default) or 'probability' (lowest gates). */
  dropPolicy?: DropPolicy;
  /** Shared experts every token passes through, each of width dFF (DeepSeek-MoE; default 0). */
  sharedExperts?: number;
  /** Coefficient of the Switch/GShard load-balance loss (default 0.01). */
  loadBalanceCoef?: number;
  /** Compute the balance loss per sequence of this many tokens (sequence-level variant); null = over the batch. */
  balanceSeqLen?: number | null;
  /** Coefficient of the router z-loss (default 0.001). */
  zLossCoef?: number;
  /** Coefficients of router-specific losses by name, e.g. { importance: 0.01, load: 0.01 } for noisy top-k (default 0.01 each). */
  routerLossCoefs?: Record<string, number>;
  /** Seed for router and expert initialisation (default 0). */
  seed?: number;
}

const CONFIG_KEYS = [
  'dModel', 'dFF', 'numExperts', 'router', 'activation', 'bias', 'capacityFactor', 'evalCapacityFactor', 'dropPolicy',
  'sharedExperts', 'loadBalanceCoef', 'balanceSeqLen', 'zLossCoef', 'routerLossCoefs', 'seed',
] as const;

export interface MoEOutput {
  /** Same shape as the input. */
  y: Tensor;
  /** Weighted sum of the auxiliary losses: add it to the task loss. */
  auxLoss: Tensor;
  /** Each auxiliary loss, unweighted. */
  losses: Record<string, Tensor>;
  metrics: RouterMetrics;
  routing: Routing;
  plan: DispatchPlan;
}

/** The routed-expert computation of a layer: token rows x [T, d], the plan, the gate of each plan row [A'] -> [T, d]. */
export type RoutedExperts = (x: Tensor, plan: DispatchPlan, gateOfRow: Tensor) => Tensor;

/** Parameters a token uses in a model: all, less the experts it is not routed to in every MoE layer. */
export function activeParameterCount(model: Module, k: number): number {
  let inactive = 0;
  for (const [, m] of model.namedModules()) if (m instanceof MoELayer) inactive += m.numParameters() - m.activeParameters(k);
  return model.numParameters() - inactive;
}

export class MoELayer extends Module {
  readonly router: Router;
  readonly experts: ExpertBank;
  readonly shared: ExpertBank | null;
  readonly config: Readonly<Required<Omit<MoELayerConfig, 'router'>>> & { router: RouterConfig };

  constructor(config: MoELayerConfig) {
    super();
    checkKeys('MoELayer', config, CONFIG_KEYS);
    for (const k of ['dModel', 'dFF', 'numExperts', 'sharedExperts', 'loadBalanceCoef', 'zLossCoef', 'seed'] as const) checkType('MoELayer', k, config[k], 'number');
    checkInt('MoELayer', 'dModel', config.dModel, 1);
    checkInt('MoELayer', 'dFF', config.dFF, 1);
    checkInt('MoELayer', 'numExperts', config.numExperts, 1);
    const cf = config.capacityFactor ?? null;
    const ecf = config.evalCapacityFactor === undefined ? cf : config.evalCapacityFactor;
    for (const [name, v] of [['capacityFactor', cf], ['evalCapacityFactor', ecf]] as const) {
      if (v !== null && !(typeof v === 'number' && v > 0 && Number.isFinite(v))) throw new Error(`MoELayer: ${name} = ${v} must be a positive number or null (dropless)`);
    }
    const dropPolicy = config.dropPolicy ?? 'position';
    if (dropPolicy !== 'position' && dropPolicy !== 'probability') throw new Error(`MoELayer: dropPolicy = '${String(dropPolicy)}' must be 'position' or 'probability'`);
    const sharedExperts = config.sharedExperts ?? 0;
    checkInt('MoELayer', 'sharedExperts', sharedExperts, 0);
    const seed = config.seed ?? 0;
    this.config = {
      dModel: config.dModel, dFF: config.dFF, numExperts: config.numExperts,
      router: config.router ?? { type: 'topk', k: 2 },
      activation: config.activation ?? 'gelu', bias: config.bias ?? false,
      capacityFactor: cf, evalCapacityFactor: ecf, dropPolicy, sharedExperts,
      loadBalanceCoef: config.loadBalanceCoef ?? 0.01, balanceSeqLen: config.balanceSeqLen ?? null,
      zLossCoef: config.zLossCoef ?? 0.001, routerLossCoefs: config.routerLossCoefs ?? {}, seed,
    };
    this.router = this.module('router', createRouter(this.config.router as { type: string } & Record<string, unknown>, config.dModel, config.numExperts, seed));
    const bankOpts = { activation: this.config.activation, bias: this.config.bias };
    this.experts = this.module('experts', new ExpertBank(config.numExperts, config.dModel, config.dFF, { ...bankOpts, seed: seed + 1 }));
    this.shared = sharedExperts > 0 ? this.module('shared', new ExpertBank(1, config.dModel, sharedExperts * config.dFF, { ...bankOpts, seed: seed + 2 })) : null;
  }

  /**
   * The router metrics of the latest forward (null before the first): how a caller reads routing
   * statistics of layers deep inside a model, e.g. `moe inspect` after one batch.
   */
  lastMetrics: RouterMetrics | null = null;

  /**
   * When set, runs the routed experts in place of experts.forwardRouted (expert parallelism,
   * src/parallel/): same inputs, same result, another place to compute it.
   */
  routedExperts: RoutedExperts | null = null;

  /** Parameters a token uses: router, k experts, shared experts. */
  activeParameters(k: number): number {
    return this.router.numParameters() + k * this.experts.paramsPerExpert() + (this.shared?.numParameters() ?? 0);
  }

  /** x [..., d] -> y [..., d] with aux losses and metrics. tokenIds (for hash routing) has one id per token. */
  forward(x: Tensor, opts: { tokenIds?: Int32Array } = {}): MoEOutput {
    const d = this.config.dModel;
    if (x.rank < 1 || x.shape[x.rank - 1] !== d) throw new Error(`MoELayer: input last dimension must be dModel = ${d}, got [${x.shape.join(', ')}]`);
    const T = x.size / d;
    const x2 = reshape(x, [T, d]);
    const routing = this.router.route(x2, opts.tokenIds ? { tokenIds: opts.tokenIds } : {});
    const cf = this.training ? this.config.capacityFactor : this.config.evalCapacityFactor;
    // routers that fix their own capacity (expert choice) dispatch dropless
    const capacity = cf === null || routing.capacity !== undefined ? null : expertCapacity(cf, routing.token.length, routing.experts);
    const plan = planDispatch(routing.token, routing.expert, routing.gates.data, routing.experts, capacity, this.config.dropPolicy);
    // permute, experts and weighted un-permute as one op: backward keeps the hidden
    // pre-activations and the indices, re-gathering the permuted rows (see ops/expert-mlp.ts)
    const gateOfRow = takeFlat(routing.gates, plan.order);
    let y = this.routedExperts
      ? this.routedExperts(x2, plan, gateOfRow)
      : this.experts.forwardRouted(x2, plan.tokenOfRow, plan.groupSizes, gateOfRow, this.config.bias ? plan.expertOfRow : undefined);
    if (this.shared) y = add(y, this.shared.forward(x2, Int32Array.of(T), this.config.bias ? new Int32Array(T) : undefined));

    const losses: Record<string, Tensor> = {};
    const c = this.config;
    if (routing.probs && c.loadBalanceCoef > 0) {
      losses['loadBalance'] = c.balanceSeqLen
        ? sequenceLoadBalanceLoss(routing.probs, routing.token, routing.expert, routing.k, c.balanceSeqLen)
        : loadBalanceLoss(routing.probs, routing.expert, routing.k);
    }
    if (routing.logits && c.zLossCoef > 0) losses['zLoss'] = zLoss(routing.logits);
    Object.assign(losses, routing.aux);
    let auxLoss = Tensor.empty([], x.dtype);
    for (const [name, l] of Object.entries(losses)) {
      const coef = name === 'loadBalance' ? c.loadBalanceCoef : name === 'zLoss' ? c.zLossCoef : c.routerLossCoefs[name] ?? 0.01;
      if (coef !== 0) auxLoss = add(auxLoss, mul(l, coef));
    }
    const metrics = noGrad(() => routerMetrics(routing, plan));
    this.lastMetrics = metrics;
    return { y: reshape(y, x.shape), auxLoss, losses, metrics, routing, plan };
  }
}
