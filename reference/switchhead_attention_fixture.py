"""Writes the PyTorch reference fixture for SwitchHead attention-MoE (Csordas et al. 2023)
(run: /usr/bin/python3 reference/switchhead_attention_fixture.py).

B=2, T=5, d=8, H=2 heads of hd=4, E=3 experts per head, k=2, causal, rotary positions (base 10000).
Written independently of moe-ts in plain PyTorch, as dense masks rather than moe-ts's gathers and
grouped GEMMs: every expert runs on every token and the non-chosen ones are multiplied by zero.
  s = sigmoid(x W_S^T) [.., H, E], value of head h = sum over the top-k e of s_e * x W_V[h, e]
  o = sigmoid(x W_D^T) [.., H, E], y = sum_h sum over the top-k e of o_e * a_h W_O[h, e]
Weights and inputs start as float32 numbers and the computation runs in float64. L = sum(y * G);
the fixture holds y, L and dL/d of the input and every weight, named as moe-ts names them.
"""
import math
import os

import torch

from attention_common import causal_attention, rope, uniform_f32, write_fixture

OUT = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures", "switchhead_attention.json")

B, T, d, H, hd, E, K = 2, 5, 8, 2, 4, 3, 2
BASE = 10000.0


def topk_mask(s):
    """1 at the K largest of the last axis, 0 elsewhere (no gradient through the choice)."""
    idx = s.detach().topk(K, dim=-1).indices
    return torch.zeros_like(s).scatter(-1, idx, 1.0)


def switchhead(x, p):
    q = (x @ p["q.weight"].t()).view(B, T, H, hd).transpose(1, 2)  # [B, H, T, hd]
    k = (x @ p["k.weight"].t()).view(B, T, H, hd).transpose(1, 2)
    s = torch.sigmoid(x @ p["valueGate.weight"].t()).view(B, T, H, E)
    gate_v = s * topk_mask(s)  # [B, T, H, E]
    wv = p["wv"].view(H, E, d, hd)
    v_all = torch.einsum("btc,hecf->bthef", x, wv)  # every expert's value [B, T, H, E, hd]
    v = (v_all * gate_v.unsqueeze(-1)).sum(3).transpose(1, 2)  # [B, H, T, hd]
    q, k = rope(q, BASE), rope(k, BASE)
    a = causal_attention(q, k, v).transpose(1, 2)  # [B, T, H, hd]
    o = torch.sigmoid(x @ p["outputGate.weight"].t()).view(B, T, H, E)
    gate_o = o * topk_mask(o)
    wo = p["wo"].view(H, E, hd, d)
    y_all = torch.einsum("bthf,hefc->bthec", a, wo)  # [B, T, H, E, d]
    return (y_all * gate_o.unsqueeze(-1)).sum((2, 3))


def main():
    g = torch.Generator().manual_seed(0)
    f32 = uniform_f32(g)

    x = f32(B, T, d)
    params = {
        "q.weight": f32(H * hd, d, scale=1 / math.sqrt(d)),
        "k.weight": f32(H * hd, d, scale=1 / math.sqrt(d)),
        "valueGate.weight": f32(H * E, d, scale=2.0),
        "outputGate.weight": f32(H * E, d, scale=2.0),
        "wv": f32(H * E, d, hd, scale=1 / math.sqrt(d)),
        "wo": f32(H * E, hd, d, scale=1 / math.sqrt(hd)),
    }
    G = torch.randn(B, T, d, generator=g).float().double()
    y = switchhead(x, params)
    L = (y * G).sum()
    L.backward()

    meta = {"B": B, "T": T, "d": d, "heads": H, "headDim": hd, "experts": E, "k": K, "ropeBase": BASE, "causal": 1, "rope": 1}
    write_fixture(OUT, meta, x, G, y, L, params)

if __name__ == "__main__":
    main()
