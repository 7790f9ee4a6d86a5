// Backend registry and selection: native when it is built, else js; MOE_BACKEND=js|native or
// setBackend() forces one. Ops fetch kernels by name; a missing kernel is a named error.

import type { Backend, KernelImpls, KernelName } from './kernels.js';

const backends = new Map<string, Backend>();
let current: Backend | null = null;
/** Loaders for backends that are registered on first use (the native addon is loaded lazily). */
const lazy = new Map<string, () => Backend | null>();
const loadErrors = new Map<string, string>();

export class KernelNotFoundError extends Error {
  constructor(readonly kernel: string, readonly backend: string) {
    super(`kernel '${kernel}' is not implemented on backend '${backend}'`);
    this.name = 'KernelNotFoundError';
  }
}

export function registerBackend(b: Backend): void {
  backends.set(b.name, b);
}

/** Registers a loader that returns the backend, or null with the reason recorded by setLoadError. */
export function registerLazyBackend(name: string, load: () => Backend | null): void {
  lazy.set(name, load);
}

export function setLoadError(name: string, reason: string): void {
  loadErrors.set(name, reason);
}

export function findBackend(name: string): Backend | null {
  let b = backends.get(name);
  if (!b) {
    const load = lazy.get(name);
    if (load) {
      lazy.delete(name);
      const loaded = load();
      if (loaded) {
        registerBackend(loaded);
        b = loaded;
      }
    }
  }
  return b ?? null;
}

export function backendLoadError(name: string): string | undefined {
  return loadErrors.get(name);
}

/** Names of the backends that are available (loading lazy ones). */
export function availableBackends(): string[] {
  for (const name of [...lazy.keys()]) findBackend(name);
  return [...backends.keys()];
}

function resolve(name: string): Backend {
  const b = findBackend(name);
  if (!b) {
    const why = loadErrors.get(name);
    const known = [...new Set([...backends.keys(), ...lazy.keys(), ...loadErrors.keys()])].join(', ');
    throw new Error(`backend '${name}' is not available${why ? `: ${why}` : ''} (known: ${known})`);
  }
  return b;
}

export function getBackend(): Backend {
  if (current) return current;
  const forced = process.env['MOE_BACKEND'];
  if (forced !== undefined && forced !== '') {
    if (forced !== 'js' && forced !== 'native') throw new Error(`MOE_BACKEND must be 'js' or 'native', got '${forced}'`);
    current = resolve(forced);
  } else {
    current = findBackend('native') ?? resolve('js');
  }
  return current;
}

export function setBackend(name: string): Backend {
  current = resolve(name);
  return current;
}

/** Runs fn with the named backend selected, restoring the previous one afterwards. */
export function withBackend<T>(name: string, fn: () => T): T {
  const prev = getBackend();
  current = resolve(name);
  try {
    return fn();
  } finally {
    current = prev;
  }
}

/** Milliseconds and calls per kernel while profiling is on. */
export interface KernelProfile {
  [kernel: string]: { ms: number; calls: number };
}

let profile: KernelProfile | null = null;

/** Runs fn with every kernel call timed; returns fn's result and the time per kernel. */
export function profileKernels<T>(fn: () => T): { result: T; profile: KernelProfile } {
  const prev = profile;
  const mine: KernelProfile = {};
  profile = mine;
  try {
    return { result: fn(), profile: mine };
  } finally {
    profile = prev;
  }
}

function timed<F extends (...args: never[]) => void>(name: string, f: F, into: KernelProfile): F {
  return ((...args: Parameters<F>) => {
    const t0 = performance.now();
    try {
      f(...args);
    } finally {
      const e = (into[name] ??= { ms: 0, calls: 0 });
      e.ms += performance.now() - t0;
      e.calls++;
    }
  }) as F;
}

/** Passes a prefetch hint to the current backend (see Backend.prefetch); a no-op where it has none. */
export function prefetchHint(data: ArrayBufferView, replace = false): void {
  getBackend().prefetch?.(data, replace);
}

export function kernel<K extends KernelName>(name: K): KernelImpls[K] {
  const b = getBackend();
  const k = b.kernels[name];
  if (!k) throw new KernelNotFoundError(name, b.name);
  if (profile) return timed(name, k as (...args: never[]) => void, profile) as KernelImpls[K];
  return k as KernelImpls[K];
}
