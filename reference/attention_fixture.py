"""Writes the PyTorch reference fixture for causal multi-head attention with rotary embeddings
(run: /usr/bin/python3 reference/attention_fixture.py).

B=2, T=5, d=8, heads=2 (hd=4). The layer is written independently of moe-ts in plain PyTorch:
nanoGPT's fused c_attn (qkv weight [3d, d], q then k then v rows), HF LLaMA's rotate_half RoPE
with base 10000, a causal mask by masked_fill(-inf), scale 1/sqrt(hd), then the output Linear.
Weights and inputs start as float32 numbers and the computation runs in float64, so the fixture is
the exact arithmetic that float32 runs approximate. L = sum(y * G); the fixture holds y, L and
dL/d of the input and every weight, named as moe-ts names them (qkv.weight, proj.bias, ...).
"""
import json
import math
import os

import torch

OUT = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures", "attention.json")

B, T, d, H = 2, 5, 8, 2
hd = d // H
BASE = 10000.0


def rope_tables(T, hd):
    inv_freq = 1.0 / (BASE ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)  # [T, hd/2]
    emb = torch.cat([freqs, freqs], dim=-1)  # [T, hd]
    return emb.cos(), emb.sin()


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat([-x2, x1], dim=-1)


def attention(x, w_qkv, b_qkv, w_proj, b_proj):
    q, k, v = (x @ w_qkv.t() + b_qkv).split(d, dim=-1)
    q, k, v = (t.view(B, T, H, hd).transpose(1, 2) for t in (q, k, v))  # [B, H, T, hd]
    cos, sin = rope_tables(T, hd)
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    att = (q @ k.transpose(-2, -1)) / math.sqrt(hd)  # [B, H, T, T]
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    att = att.masked_fill(future, float("-inf")).softmax(dim=-1)
    y = (att @ v).transpose(1, 2).reshape(B, T, d)
    return y @ w_proj.t() + b_proj


def main():
    g = torch.Generator().manual_seed(0)

    def f32(*shape, scale=1.0):
        return ((torch.rand(*shape, generator=g) * 2 - 1) * scale).float().double().requires_grad_()

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

    tensors = {"x": x, "G": G, "y": y, "loss": L.reshape(1), "grad.x": x.grad}
    for name, p in params.items():
        tensors[name] = p
        tensors["grad." + name] = p.grad
    data = {"meta": {"B": B, "T": T, "d": d, "heads": H, "ropeBase": BASE, "causal": 1, "rope": 1}}
    for k, v in tensors.items():
        data[k] = {"shape": list(v.shape), "data": [float(z) for z in v.detach().reshape(-1).tolist()]}
    with open(OUT, "w") as f:
        json.dump(data, f)
    print("wrote", OUT, {k: list(v.shape) for k, v in tensors.items()})


if __name__ == "__main__":
    main()
