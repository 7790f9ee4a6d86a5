"""Writes the PyTorch reference fixture for causal multi-head attention with rotary embeddings
(run: /usr/bin/python3 reference/attention_fixture.py).

B=2, T=5, d=8, heads=2 (hd=4). The layer is written independently of moe-ts in plain PyTorch:
nanoGPT's fused c_attn (qkv weight [3d, d], q then k then v rows), HF LLaMA's rotate_half RoPE
with base 10000, a causal mask by masked_fill(-inf), scale 1/sqrt(hd), then the output Linear.
Weights and inputs start as float32 numbers and the computation runs in float64, so the fixture is
the exact arithmetic that float32 runs approximate. L = sum(y * G); the fixture holds y, L and
dL/d of the input and every weight, named as moe-ts names them (qkv.weight, proj.bias, ...).
"""
import math
import os

import torch

from attention_common import causal_attention, rope, uniform_f32, write_fixture

OUT = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures", "attention.json")

B, T, d, H = 2, 5, 8, 2
hd = d // H
BASE = 10000.0


def attention(x, w_qkv, b_qkv, w_proj, b_proj):
    q, k, v = (x @ w_qkv.t() + b_qkv).split(d, dim=-1)
    q, k, v = (t.view(B, T, H, hd).transpose(1, 2) for t in (q, k, v))  # [B, H, T, hd]
    q, k = rope(q, BASE), rope(k, BASE)
    y = causal_attention(q, k, v).transpose(1, 2).reshape(B, T, d)
    return y @ w_proj.t() + b_proj


def main():
    g = torch.Generator().manual_seed(0)
    f32 = uniform_f32(g)

    x = f32(B, T, d)
    params = {
        "qkv.weight": f32(3 * d, d, scale=1 / math.sqrt(d)),
        "qkv.bias": f32(3 * d, scale=1 / math.sqrt(d)),
        "proj.weight": f32(d, d, scale=1 / math.sqrt(d)),
        "proj.bias": f32(d, scale=1 / math.sqrt(d)),
    }
    G = torch.randn(B, T, d, generator=g).float().double()
    y = attention(x, params["qkv.weight"], params["qkv.bias"], params["proj.weight"], params["proj.bias"])
    L = (y * G).sum()
    L.backward()

    meta = {"B": B, "T": T, "d": d, "heads": H, "ropeBase": BASE, "causal": 1, "rope": 1}
    write_fixture(OUT, meta, x, G, y, L, params)

if __name__ == "__main__":
    main()
