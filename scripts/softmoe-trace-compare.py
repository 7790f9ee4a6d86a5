"""Compares two dumps of scripts/softmoe-trace.mjs bit for bit: per dumped step, which parameters differ and by how much."""
import json
import sys

import numpy as np


def load(prefix):
    meta = json.load(open(prefix + '.json'))
    total = sum(meta['sizes'])
    data = np.fromfile(prefix + '.bin', dtype=np.float32)
    if data.size % total:
        sys.exit(f'{prefix}.bin holds {data.size} floats, not a multiple of the {total} parameters {prefix}.json names')
    return meta, data.reshape(-1, total)


def main():
    if len(sys.argv) != 3:
        sys.exit('usage: python3 scripts/softmoe-trace-compare.py DUMP_A DUMP_B (the OUT prefixes given to softmoe-trace.mjs)')
    (ma, A), (mb, B) = load(sys.argv[1]), load(sys.argv[2])
    if ma['names'] != mb['names'] or ma['sizes'] != mb['sizes']:
        sys.exit('the two dumps hold different parameters (names or sizes): not the same model')
    common = [s for s in ma['dumpSteps'] if s in mb['dumpSteps']]
    print(f"A {ma['root']} ({ma['formulation']}, MOE_NATIVE_THREADS={ma['threads']}, OPENBLAS_NUM_THREADS={ma.get('openblasThreads')})")
    print(f"B {mb['root']} ({mb['formulation']}, MOE_NATIVE_THREADS={mb['threads']}, OPENBLAS_NUM_THREADS={mb.get('openblasThreads')})")
    first = None
    for st in common:
        x, y = A[ma['dumpSteps'].index(st)], B[mb['dumpSteps'].index(st)]
        parts, o = [], 0
        for name, size in zip(ma['names'], ma['sizes']):
            a, b = x[o:o + size], y[o:o + size]
            o += size
            ne = int(np.count_nonzero(a.view(np.uint32) != b.view(np.uint32)))
            if ne:
                d = np.abs(a.astype(np.float64) - b)
                parts.append(f'{name} {ne}/{size} differ, max|d| {d.max():.3g} ({d.max() / max(np.abs(a).max(), 1e-30):.2g} of max|param|)')
        if parts and first is None:
            first = st
        print(f"  step {st}: " + ('bit-identical' if not parts else '; '.join(parts)))
    la, lb = ma['losses'], mb['losses']
    m = min(len(la), len(lb))
    fd = next((i for i in range(m) if la[i] != lb[i]), None)
    print(f'  parameters first differ at dumped step {first}; losses equal for {fd if fd is not None else m} of {m} steps')


main()
