// A fixed pool of expert slots and the eviction policies (LRU, LFU) that choose which expert leaves: pure bookkeeping, no I/O.

export type ExpertPolicy = 'lru' | 'lfu' | 'pregate';
export const EXPERT_POLICIES: readonly ExpertPolicy[] = ['lru', 'lfu', 'pregate'];

/** Which occupied, unpinned slot to free; the pool offers only those. */
export interface EvictionRule {
  readonly name: string;
  victim(pool: SlotPool, candidates: readonly number[]): number;
}

/** Least recently used: the slot whose expert was used (or loaded) longest ago. */
export const LRU: EvictionRule = {
  name: 'lru',
  victim(pool, candidates) {
    let best = candidates[0]!;
    for (const s of candidates) if (pool.lastUse(s) < pool.lastUse(best)) best = s;
    return best;
  },
};

/**
 * Least frequently used: the slot whose expert has been used the fewest times since the cache
 * started (counts outlive eviction, so an expert popular over the whole stream is kept against
 * a burst of one-off ones); ties go to the least recently used.
 */
export const LFU: EvictionRule = {
  name: 'lfu',
  victim(pool, candidates) {
    let best = candidates[0]!;
    for (const s of candidates) {
      const a = pool.uses(pool.expertIn(s));
      const b = pool.uses(pool.expertIn(best));
      if (a < b || (a === b && pool.lastUse(s) < pool.lastUse(best))) best = s;
    }
    return best;
  },
};

/** The eviction rule of a policy name: pre-gating decides what to load ahead and evicts LRU. */
export function evictionRule(policy: ExpertPolicy): EvictionRule {
  return policy === 'lfu' ? LFU : LRU;
}

/** numExperts experts competing for numSlots slots. Time is a counter advanced by every touch. */
export class SlotPool {
  private readonly slotOf: Int32Array; // [E]: slot holding expert e, or -1
  private readonly expertOf: Int32Array; // [C]: expert in slot s, or -1
  private readonly last: Float64Array; // [C]: time of the last touch
  private readonly count: Float64Array; // [E]: uses since the start
  private readonly pinned: Uint8Array; // [C]
  private clock = 0;

  constructor(readonly numExperts: number, readonly numSlots: number, readonly rule: EvictionRule) {
    if (!Number.isInteger(numSlots) || numSlots < 1) throw new Error(`SlotPool: numSlots must be a positive integer, got ${numSlots}`);
    if (!Number.isInteger(numExperts) || numExperts < 1) throw new Error(`SlotPool: numExperts must be a positive integer, got ${numExperts}`);
    this.slotOf = new Int32Array(numExperts).fill(-1);
    this.expertOf = new Int32Array(numSlots).fill(-1);
    this.last = new Float64Array(numSlots);
    this.count = new Float64Array(numExperts);
    this.pinned = new Uint8Array(numSlots);
  }

  /** The slot holding expert e, or -1. */
  slot(e: number): number {
    return this.slotOf[e]!;
  }
  expertIn(s: number): number {
    return this.expertOf[s]!;
  }
  lastUse(s: number): number {
    return this.last[s]!;
  }
  uses(e: number): number {
    return e < 0 ? 0 : this.count[e]!;
  }

  /** Records a use of resident expert e (recency and frequency). */
  use(e: number): void {
    const s = this.slotOf[e]!;
    if (s < 0) throw new Error(`SlotPool: expert ${e} is not resident`);
    this.count[e]! += 1;
    this.last[s] = ++this.clock;
  }

  /**
   * A slot for expert e (not resident): a free one, else the rule's victim among unpinned slots.
   * Returns the slot and the expert evicted from it (-1 if it was free). The caller fills the slot.
   */
  place(e: number): { slot: number; evicted: number } {
    if (this.slotOf[e]! >= 0) throw new Error(`SlotPool: expert ${e} is already in slot ${this.slotOf[e]}`);
    let slot = this.expertOf.indexOf(-1);
    if (slot < 0) {
      const candidates: number[] = [];
      for (let s = 0; s < this.numSlots; s++) if (!this.pinned[s]) candidates.push(s);
      if (candidates.length === 0) throw new Error(`SlotPool: all ${this.numSlots} slots are pinned; no room for expert ${e}`);
      slot = this.rule.victim(this, candidates);
    }
    const evicted = this.expertOf[slot]!;
    if (evicted >= 0) this.slotOf[evicted] = -1;
    this.expertOf[slot] = e;
    this.slotOf[e] = slot;
    this.last[slot] = ++this.clock;
    return { slot, evicted };
  }

  /** Empties slot s (its load failed, or it is dropped). */
  clear(s: number): void {
    const e = this.expertOf[s]!;
    if (e >= 0) this.slotOf[e] = -1;
    this.expertOf[s] = -1;
    this.pinned[s] = 0;
  }

  /** A pinned slot is never a victim (its expert is in use by the product being prepared). */
  pin(s: number): void {
    this.pinned[s] = 1;
  }
  unpin(s: number): void {
    this.pinned[s] = 0;
  }
  unpinAll(): void {
    this.pinned.fill(0);
  }

  /** Experts resident now, by slot (-1: free). */
  residents(): number[] {
    return [...this.expertOf];
  }
}
