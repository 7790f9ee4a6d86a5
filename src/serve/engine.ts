// The engine loop: calls scheduler.step() while there is work, yielding to the event loop between steps.

import type { Scheduler, StepInfo } from './scheduler.js';

/**
 * Steps are synchronous (a forward of the batch), so HTTP I/O (new requests, disconnects,
 * streamed writes) happens between them: setImmediate lets pending I/O callbacks run after
 * each step. The loop sleeps when the scheduler has nothing to do; kick() wakes it.
 */
export class EngineLoop {
  private active = false;
  private idleWaiters: Array<() => void> = [];

  constructor(private readonly scheduler: Scheduler, private readonly onStep?: (info: StepInfo) => void) {}

  get running(): boolean { return this.active; }

  /** Starts the loop if it sleeps (call after each submit). */
  kick(): void {
    if (this.active) return;
    this.active = true;
    setImmediate(this.tick);
  }

  /** Resolves when the scheduler has no queued or running sequence. */
  idle(): Promise<void> {
    if (!this.active && !this.scheduler.hasWork()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private readonly tick = (): void => {
    if (!this.scheduler.hasWork()) {
      this.active = false;
      const w = this.idleWaiters;
      this.idleWaiters = [];
      for (const f of w) f();
      return;
    }
    try {
      const info = this.scheduler.step();
      this.onStep?.(info);
    } catch (e) {
      // step() catches model and callback errors itself; reaching here is a bug: fail loudly but stay up
      const msg = `engine step failed: ${(e as Error).message}`;
      process.stderr.write(`moe serve: ${msg}\n`);
      this.scheduler.failAll(msg);
    }
    for (const m of this.scheduler.callbackErrors.splice(0)) process.stderr.write(`moe serve: ${m}\n`);
    setImmediate(this.tick);
  };
}
