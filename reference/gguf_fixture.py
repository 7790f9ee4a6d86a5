"""Writes test/fixtures/gguf/gguf-py.gguf with gguf-py (llama.cpp's own Python package, `pip install gguf`;
the Debian wheel unzipped on PYTHONPATH works too): float32 rows chosen to hit ggml's rounding corner
cases, their Q8_0, Q4_0, F16 and BF16 encodings by gguf-py's reference quantisers, and metadata of every
value type. test/gguf.test.ts reads it to check moe-ts's reader and its quantisers byte for byte.

Run: python3 reference/gguf_fixture.py
"""
import os

import numpy as np
import gguf
from gguf import quants

rng = np.random.default_rng(10)
rows = []
rows += [rng.normal(size=256) * s for s in (1.0, 0.02, 3e-6, 1e3)]         # ordinary blocks, tiny and large scales
rows += [rng.integers(-127, 128, size=256) + 0.5 * rng.integers(0, 2, size=256)]  # halves: ties of roundf
r = np.zeros(256); r[::32] = 127; r[1::32] = 2.5; r[2::32] = -2.5; rows += [r]     # amax 127: d = 1, exact ties
r = rng.integers(-8, 9, size=256).astype(np.float64); r[::32] = -8; rows += [r]   # Q4_0 ties at d = 1
r = np.zeros(256); r[::32] = 8; r[1::32] = -8; rows += [r]                         # equal magnitudes, first wins
rows += [np.zeros(256)]                                                             # zero blocks
rows += [rng.uniform(-1, 1, size=256) * np.repeat(10.0 ** rng.integers(-8, 4, size=8), 32)]  # per-block scales
x = np.stack(rows).astype(np.float32)

w = gguf.GGUFWriter(os.path.join(os.path.dirname(__file__), '..', 'test', 'fixtures', 'gguf', 'gguf-py.gguf'), 'olmoe')
w.add_uint8('test.u8', 200)
w.add_int8('test.i8', -100)
w.add_uint16('test.u16', 60000)
w.add_int16('test.i16', -30000)
w.add_uint32('test.u32', 4000000000)
w.add_int32('test.i32', -2000000000)
w.add_float32('test.f32', 0.1)
w.add_uint64('test.u64', 2 ** 40 + 1)
w.add_int64('test.i64', -(2 ** 40) - 1)
w.add_float64('test.f64', 0.1)
w.add_bool('test.bool', True)
w.add_string('test.string', 'Tous les êtres humains 🌍')
w.add_array('test.strings', ['a', 'b c', ''])
w.add_array('test.ints', [1, -2, 3])
w.add_tensor('x', x)
for t in (gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_0, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16):
    q = quants.quantize(x, t)
    w.add_tensor('x.' + t.name.lower(), q, raw_shape=q.shape, raw_dtype=t)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
