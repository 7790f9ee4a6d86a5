// Summary statistics of measurements, shared by src/ (experiments, the parallel bench) and bench/.

/** The median (the mean of the two middle values for an even count); xs is not modified; NaN when empty. */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
