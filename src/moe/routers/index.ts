// Router registry: a router config ({ type, ...options }) to a router instance.

import type { Router } from './types.js';
import { TopKRouter, SwitchRouter, type TopKRouterOptions } from './topk.js';
import { HashRouter, type HashRouterOptions } from './hash.js';
import { ExpertChoiceRouter, type ExpertChoiceRouterOptions } from './expert-choice.js';
import { SigmoidGroupRouter, type SigmoidGroupRouterOptions } from './sigmoid-group.js';
import { DynamicRouter, type DynamicRouterOptions } from './dynamic.js';
import { DifferentiableTopKRouter, type DifferentiableTopKOptions } from './differentiable.js';
import { NoisyTopKRouter, type NoisyTopKRouterOptions } from './noisy.js';
import { HierarchicalRouter, type HierarchicalRouterOptions } from './hierarchical.js';
import { StraightThroughRouter, type StraightThroughOptions } from './straight-through.js';
import { DeviceLimitedRouter, type DeviceLimitedRouterOptions } from './device-limited.js';
import { checkKeys } from '../config.js';

export { HierarchicalRouter, type HierarchicalRouterOptions, type HierarchicalRouteOptions } from './hierarchical.js';

export type RouterConfig =
  | ({ type: 'topk' } & TopKRouterOptions)
  | ({ type: 'switch'; jitter?: number; seed?: number })
  | ({ type: 'noisy-topk' } & NoisyTopKRouterOptions)
  | ({ type: 'hash' } & HashRouterOptions)
  | ({ type: 'expert-choice' } & ExpertChoiceRouterOptions)
  | ({ type: 'sigmoid-group' } & SigmoidGroupRouterOptions)
  | ({ type: 'dynamic' } & DynamicRouterOptions)
  | ({ type: 'differentiable-topk' } & DifferentiableTopKOptions)
  | ({ type: 'hierarchical' } & HierarchicalRouterOptions)
  | ({ type: 'straight-through' } & StraightThroughOptions)
  | ({ type: 'device-limited' } & DeviceLimitedRouterOptions);

export type RouterType = RouterConfig['type'];

type Factory = (cfg: Record<string, unknown>, dModel: number, numExperts: number) => Router;

const registry = new Map<string, { keys: readonly string[]; make: Factory }>();

export function registerRouter(type: string, keys: readonly string[], make: Factory): void {
  registry.set(type, { keys, make });
}

export function routerTypes(): string[] {
  return [...registry.keys()];
}

/** Builds the router a config names; unknown types and keys are errors naming them. */
export function createRouter(cfg: { type: string } & Record<string, unknown>, dModel: number, numExperts: number, seed = 0): Router {
  const entry = registry.get(cfg.type);
  if (!entry) throw new Error(`router.type = '${cfg.type}' is unknown (known: ${routerTypes().join(', ')})`);
  checkKeys(`router (${cfg.type})`, cfg, ['type', 'seed', ...entry.keys]);
  const { type: _type, ...opts } = cfg;
  return entry.make({ seed, ...opts }, dModel, numExperts);
}

const LINEAR = ['jitter'];
// the casts are checked by each router's constructor, which validates every option it reads
registerRouter('topk', [...LINEAR, 'k', 'order', 'normalize'], (c, d, e) => new TopKRouter(d, e, c as TopKRouterOptions));
registerRouter('switch', LINEAR, (c, d, e) => new SwitchRouter(d, e, c as { jitter?: number }));
registerRouter('noisy-topk', [...LINEAR, 'k', 'noiseEpsilon'], (c, d, e) => new NoisyTopKRouter(d, e, c as NoisyTopKRouterOptions));
registerRouter('hash', ['k'], (c, d, e) => new HashRouter(d, e, c as HashRouterOptions));
registerRouter('expert-choice', [...LINEAR, 'capacityFactor'], (c, d, e) => new ExpertChoiceRouter(d, e, c as ExpertChoiceRouterOptions));
registerRouter('sigmoid-group', [...LINEAR, 'k', 'groups', 'topkGroups', 'biasRate', 'routedScaling', 'normalize'],
  (c, d, e) => new SigmoidGroupRouter(d, e, c as SigmoidGroupRouterOptions));
registerRouter('dynamic', [...LINEAR, 'mode', 'p', 'threshold', 'minK', 'maxK', 'normalize'], (c, d, e) => new DynamicRouter(d, e, c as DynamicRouterOptions));
registerRouter('differentiable-topk', [...LINEAR, 'k', 'temperature', 'minGate'],
  (c, d, e) => new DifferentiableTopKRouter(d, e, c as DifferentiableTopKOptions));
registerRouter('hierarchical', [...LINEAR, 'groups', 'k', 'normalize', 'scaleByCluster', 'supervised'],
  (c, d, e) => new HierarchicalRouter(d, e, c as HierarchicalRouterOptions));
registerRouter('straight-through', [...LINEAR, 'k', 'gumbel', 'temperature'], (c, d, e) => new StraightThroughRouter(d, e, c as StraightThroughOptions));
registerRouter('device-limited', [...LINEAR, 'k', 'order', 'normalize', 'devices', 'maxDevices', 'deviceScoreTopN', 'devicesPerNode', 'intraNodeCost', 'interNodeCost', 'topologyLoss'],
  (c, d, e) => new DeviceLimitedRouter(d, e, c as DeviceLimitedRouterOptions));
