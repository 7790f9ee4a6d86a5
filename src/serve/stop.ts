// Stop strings over streamed text: emits only text that cannot turn out to start a stop string.

/**
 * Text arrives in pieces; a stop string may span pieces. The matcher holds back the longest tail
 * that is a prefix of some stop string (so a stream never shows text that a later stop cuts),
 * and on a match emits the text before it, as OpenAI's stop does (the stop itself is not output).
 */
export class StopMatcher {
  private full = '';
  private emitted = 0;
  private stopped: string | null = null;
  private readonly longest: number;

  constructor(private readonly stops: readonly string[]) {
    for (const s of stops) if (typeof s !== 'string' || s.length === 0) throw new Error('stop strings must be non-empty strings');
    this.longest = Math.max(0, ...stops.map((s) => s.length));
  }

  /** All text output so far (what a non-streamed response returns). */
  get text(): string { return this.full.slice(0, this.emitted); }

  /** Adds a piece; returns the text now safe to emit and the stop string that matched, if any. */
  push(piece: string): { emit: string; stopped: string | null } {
    if (this.stopped !== null) return { emit: '', stopped: this.stopped };
    this.full += piece;
    if (this.stops.length === 0) return { emit: this.take(this.full.length), stopped: null };
    // earliest match that ends in the new text; nothing emitted so far contains a whole stop string
    const from = Math.max(0, this.emitted - this.longest + 1);
    let at = -1;
    let which: string | null = null;
    for (const s of this.stops) {
      const i = this.full.indexOf(s, from);
      if (i >= 0 && (at < 0 || i < at)) { at = i; which = s; }
    }
    if (which !== null) {
      this.stopped = which;
      const emit = this.take(at);
      this.full = this.full.slice(0, at);
      return { emit, stopped: which };
    }
    let hold = 0;
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, this.full.length - this.emitted); n > hold; n--) {
        if (this.full.endsWith(s.slice(0, n))) { hold = n; break; }
      }
    }
    return { emit: this.take(this.full.length - hold), stopped: null };
  }

  /** Generation ended without a stop: the held-back text (plus a last piece) is output after all. */
  flush(piece = ''): string {
    if (this.stopped !== null) return '';
    const { emit, stopped } = this.push(piece);
    if (stopped !== null) return emit;
    return emit + this.take(this.full.length);
  }

  private take(upTo: number): string {
    const out = this.full.slice(this.emitted, upTo);
    this.emitted = Math.max(this.emitted, upTo);
    return out;
  }
}
