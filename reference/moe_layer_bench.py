#!/usr/bin/env python3
"""PyTorch reference for `moe bench moe-layer --compare-torch` (timing only, our own code).

The layer moe-ts's bench measures, written the way PyTorch MoE code usually is (HF Mixtral /
Megatron's local experts): a linear router without bias, softmax, top-k with the k gates
renormalised, then per expert the rows routed to it gathered, GELU(x W1[e] + b1[e]) W2[e] + b2[e],
scaled by the gate and index_add_-ed back (one parameter tensor per expert, as an nn.ModuleList
of experts holds them); plus the load-balancing loss E * sum(f * P). Forward runs
under no_grad; forward+backward is loss = sum(y * g) + aux, backward, gradients zeroed.

Prints one JSON object: forward and forward+backward tokens/s (medians after one warm-up, repeated
within a time budget as bench/timing.ts does), the thread count and peak RSS.

    python3 reference/moe_layer_bench.py --experts 8 --tokens 4096 --threads 2
"""
import argparse
import json
import math
import resource
import time

import torch
import torch.nn.functional as F


def measure(fn, budget_s, min_runs=5, max_runs=50):
    t0 = time.perf_counter()
    fn()
    warm = time.perf_counter() - t0
    times = []
    start = time.perf_counter()
    while len(times) < max_runs:
        if len(times) >= min_runs and time.perf_counter() - start >= budget_s:
            break
        if len(times) >= 1 and warm > budget_s:
            break
        s = time.perf_counter()
        fn()
        times.append(time.perf_counter() - s)
    times.sort()
    m = len(times) // 2
    return times[m] if len(times) % 2 else (times[m - 1] + times[m]) / 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--dff", type=int, default=2048)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--budget", type=float, default=3.0)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    T, d, h, E, k = a.tokens, a.d, a.dff, a.experts, a.k
    x = torch.randn(T, d)
    g = torch.randn(T, d)
    # one tensor per expert, as an nn.ModuleList of experts holds them (HF Mixtral): slicing one
    # [E, d, h] parameter instead makes every expert's backward write a full-size zero gradient
    wr = ((torch.rand(E, d) * 2 - 1) / math.sqrt(d)).requires_grad_()
    w1 = [((torch.rand(d, h) * 2 - 1) / math.sqrt(d)).requires_grad_() for _ in range(E)]
    b1 = [torch.zeros(h).requires_grad_() for _ in range(E)]
    w2 = [((torch.rand(h, d) * 2 - 1) / math.sqrt(h)).requires_grad_() for _ in range(E)]
    b2 = [torch.zeros(d).requires_grad_() for _ in range(E)]
    params = [wr, *w1, *b1, *w2, *b2]

    def layer(xin):
        probs = torch.softmax(xin @ wr.t(), dim=-1)
        topv, topi = torch.topk(probs, k, dim=-1)
        gates = topv / topv.sum(-1, keepdim=True)
        y = torch.zeros_like(xin)
        for e in range(E):
            tok, slot = torch.where(topi == e)
            if tok.numel() == 0:
                continue
            he = F.gelu(xin[tok] @ w1[e] + b1[e])
            y.index_add_(0, tok, (he @ w2[e] + b2[e]) * gates[tok, slot].unsqueeze(-1))
        counts = torch.zeros(E).index_add(0, topi.reshape(-1), torch.ones(T * k))
        aux = E * torch.sum(counts / (T * k) * probs.mean(0))
        return y, aux

    def forward():
        with torch.no_grad():
            layer(x)

    def forward_backward():
        xr = x.detach().requires_grad_()
        y, aux = layer(xr)
        ((y * g).sum() + aux).backward()
        for p in params:
            p.grad = None

    fwd = measure(forward, a.budget)
    fb = measure(forward_backward, a.budget * 4 / 3)
    print(json.dumps({
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "experts": E,
        "tokens": T,
        "forwardTokensPerSec": T / fwd,
        "forwardBackwardTokensPerSec": T / fb,
        "peakRssMiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
