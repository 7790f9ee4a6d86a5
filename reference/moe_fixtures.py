"""Writes PyTorch reference fixtures for the MoE layer tests (run: /usr/bin/python3 reference/moe_fixtures.py).

Each fixture holds inputs, weights in moe-ts layout (expert weights stacked [E, d, h] / [E, h, d],
router weight [E, d] like nn.Linear), the output, the loss L = sum(y * G) + aux, and the gradient
of L with respect to every input and weight. Everything is float32, computed independently of
moe-ts with plain PyTorch ops (the common loop-over-experts formulation).
"""
import json
import math
import os

import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures")


def dump(name, tensors, meta):
    data = {"meta": meta}
    for k, v in tensors.items():
        data[k] = {"shape": list(v.shape), "data": [float(x) for x in v.detach().reshape(-1).tolist()]}
    with open(os.path.join(OUT, name + ".json"), "w") as f:
        json.dump(data, f)
    print("wrote", name, {k: list(v.shape) for k, v in tensors.items()})


def param(*shape, scale):
    return (torch.rand(*shape) * 2 - 1).mul_(scale).requires_grad_()


def mixtral_top2():
    """Top-2 of the softmax, gates renormalised, SwiGLU experts (Mixtral's block)."""
    torch.manual_seed(0)
    T, d, h, E, k = 24, 8, 12, 4, 2
    x = torch.randn(T, d).requires_grad_()
    wg = param(E, d, scale=1 / math.sqrt(d))
    w1 = param(E, d, h, scale=1 / math.sqrt(d))
    w3 = param(E, d, h, scale=1 / math.sqrt(d))
    w2 = param(E, h, d, scale=1 / math.sqrt(h))
    G = torch.randn(T, d)
    logits = x @ wg.t()
    probs = torch.softmax(logits, dim=-1)
    topv, topi = torch.topk(probs, k, dim=-1)
    gates = topv / topv.sum(-1, keepdim=True)
    y = torch.zeros(T, d)
    for e in range(E):
        tok, slot = torch.where(topi == e)
        if tok.numel() == 0:
            continue
        xe = x[tok]
        he = F.silu(xe @ w1[e]) * (xe @ w3[e])
        y = y.index_add(0, tok, (he @ w2[e]) * gates[tok, slot].unsqueeze(-1))
    # load balance with f normalised by T*k (Megatron-Core; HF Mixtral's equals k times this)
    counts = torch.zeros(E).index_add(0, topi.reshape(-1), torch.ones(T * k))
    lb = E * torch.sum(counts / (T * k) * probs.mean(0))
    z = torch.logsumexp(logits, dim=-1).pow(2).mean()
    L = (y * G).sum() + 0.01 * lb + 0.001 * z
    L.backward()
    dump("mixtral_top2", {
        "x": x, "router": wg, "w1": w1, "w3": w3, "w2": w2, "G": G, "y": y, "loss": L.reshape(1),
        "loadBalance": lb.reshape(1), "zLoss": z.reshape(1),
        "dx": x.grad, "drouter": wg.grad, "dw1": w1.grad, "dw3": w3.grad, "dw2": w2.grad,
    }, {"T": T, "d": d, "h": h, "E": E, "k": k, "loadBalanceCoef": 0.01, "zLossCoef": 0.001})


def switch_capacity():
    """Switch routing (top-1, gate = its probability), capacity ceil(cf*T/E) by position, GELU experts."""
    torch.manual_seed(1)
    T, d, h, E, cf = 32, 8, 16, 4, 1.0
    cap = math.ceil(cf * T / E)
    x = torch.randn(T, d).requires_grad_()
    wg = param(E, d, scale=1.5 / math.sqrt(d))  # a wider router init gives uneven load, hence drops
    w1 = param(E, d, h, scale=1 / math.sqrt(d))
    w2 = param(E, h, d, scale=1 / math.sqrt(h))
    G = torch.randn(T, d)
    logits = x @ wg.t()
    probs = torch.softmax(logits, dim=-1)
    gate, expert = probs.max(dim=-1)
    onehot = F.one_hot(expert, E)
    position = (torch.cumsum(onehot, dim=0) - 1) * onehot  # 0-based place in its expert's queue
    kept = (position.sum(-1) < cap)
    y = torch.zeros(T, d)
    for e in range(E):
        tok = torch.where((expert == e) & kept)[0]
        if tok.numel() == 0:
            continue
        he = F.gelu(x[tok] @ w1[e]) @ w2[e]
        y = y.index_add(0, tok, he * gate[tok].unsqueeze(-1))
    lb = E * torch.sum(onehot.float().mean(0) * probs.mean(0))
    z = torch.logsumexp(logits, dim=-1).pow(2).mean()
    L = (y * G).sum() + 0.01 * lb + 0.001 * z
    L.backward()
    dump("switch_capacity", {
        "x": x, "router": wg, "w1": w1, "w2": w2, "G": G, "y": y, "loss": L.reshape(1),
        "loadBalance": lb.reshape(1), "zLoss": z.reshape(1), "kept": kept.float(), "expert": expert.float(),
        "dx": x.grad, "drouter": wg.grad, "dw1": w1.grad, "dw2": w2.grad,
    }, {"T": T, "d": d, "h": h, "E": E, "capacityFactor": cf, "capacity": cap, "dropped": int((~kept).sum()),
        "loadBalanceCoef": 0.01, "zLossCoef": 0.001})


def soft_moe():
    """Soft MoE: l2-normalised tokens and Phi columns with a learned scale, D over tokens, C over slots."""
    torch.manual_seed(2)
    B, m, d, n, p, h = 3, 5, 6, 4, 2, 7
    x = torch.randn(B, m, d).requires_grad_()
    phi = (torch.randn(d, n * p) / math.sqrt(d)).requires_grad_()
    scale = torch.tensor([1.3]).requires_grad_()
    w1 = param(n, d, h, scale=1 / math.sqrt(d))
    w2 = param(n, h, d, scale=1 / math.sqrt(h))
    G = torch.randn(B, m, d)
    l2 = lambda t, dim: t / torch.sqrt((t * t).sum(dim, keepdim=True) + 1e-6)  # moe-ts's eps
    logits = scale * (l2(x, -1) @ l2(phi, 0))
    D = torch.softmax(logits, dim=1)
    C = torch.softmax(logits, dim=2)
    slots = D.transpose(1, 2) @ x  # [B, n*p, d]
    outs = []
    for j in range(n):
        s = slots[:, j * p:(j + 1) * p, :]
        outs.append(F.gelu(s @ w1[j]) @ w2[j])
    y = C @ torch.cat(outs, dim=1)
    L = (y * G).sum()
    L.backward()
    dump("soft_moe", {
        "x": x, "phi": phi, "scale": scale, "w1": w1, "w2": w2, "G": G, "y": y, "loss": L.reshape(1),
        "D": D, "C": C, "dx": x.grad, "dphi": phi.grad, "dscale": scale.grad, "dw1": w1.grad, "dw2": w2.grad,
    }, {"B": B, "m": m, "d": d, "n": n, "p": p, "h": h})


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    print("torch", torch.__version__)
    mixtral_top2()
    switch_capacity()
    soft_moe()
