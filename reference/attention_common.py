"""Pieces shared by the attention fixture scripts (attention_fixture.py, switchhead_attention_fixture.py):
rotary embeddings (HF LLaMA's rotate_half, float64), causal softmax attention, the float32-valued
random inputs, and writing a fixture's tensors and gradients as JSON (atomically).
"""
import json
import math
import os

import torch


def rope(x, base):
    """Rotary positions on x [..., T, hd] (T the second-last axis): x cos + rotate_half(x) sin."""
    T, hd = x.shape[-2], x.shape[-1]
    inv_freq = 1.0 / (base ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)  # [T, hd/2]
    emb = torch.cat([freqs, freqs], dim=-1)  # [T, hd]
    x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
    return x * emb.cos() + torch.cat([-x2, x1], dim=-1) * emb.sin()


def causal_attention(q, k, v):
    """softmax(q k^T / sqrt(hd), future masked by -inf) v, for q, k, v [B, H, T, hd]."""
    T, hd = q.shape[-2], q.shape[-1]
    att = (q @ k.transpose(-2, -1)) / math.sqrt(hd)  # [B, H, T, T]
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    att = att.masked_fill(future, float("-inf")).softmax(dim=-1)
    return att @ v


def uniform_f32(g):
    """f32(*shape, scale): uniform in [-scale, scale), rounded to float32, held in float64 with a gradient."""

    def f32(*shape, scale=1.0):
        return ((torch.rand(*shape, generator=g) * 2 - 1) * scale).float().double().requires_grad_()

    return f32


def write_fixture(out, meta, x, G, y, L, params):
    """Writes meta, x, G, y, loss, grad.x and every parameter with its gradient to `out` as JSON."""
    tensors = {"x": x, "G": G, "y": y, "loss": L.reshape(1), "grad.x": x.grad}
    for name, p in params.items():
        tensors[name] = p
        tensors["grad." + name] = p.grad
    data = {"meta": meta}
    for key, v in tensors.items():
        data[key] = {"shape": list(v.shape), "data": [float(z) for z in v.detach().reshape(-1).tolist()]}
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, out)
    print("wrote", out, {key: list(v.shape) for key, v in tensors.items()})
