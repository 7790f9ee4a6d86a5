"""Writes the PyTorch reference fixture for the optimizer tests (run: /usr/bin/python3 reference/optim_fixtures.py).

Three parameters ('weight' [4, 3], 'bias' [4], 'experts' [2, 3, 2]) and a fixed sequence of five
gradients are run through torch.optim.SGD (momentum 0.9, with and without Nesterov, weight decay
0.01), Adam (weight decay 0.01), AdamW (weight decay 0.1, the rank-1 'bias' in a no-decay param
group, which is moe-ts's default rule) and torch.nn.utils.clip_grad_norm_. The learning rate
changes between steps, as a schedule would change it, and 'experts' has no gradient at step 3
(index 2), so the fixture pins down that a parameter without a gradient is skipped and that Adam's
bias correction counts that parameter's own steps. Values start as float32 numbers and the
optimizers run in float64, so the fixture is the exact arithmetic that float32 runs approximate.
"""
import json
import os

import torch

OUT = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures", "optim.json")

SHAPES = {"weight": [4, 3], "bias": [4], "experts": [2, 3, 2]}
STEPS = 5
GRAD_SCALES = [0.1, 1.0, 0.3, 2.0, 0.05]  # some gradient sets are clipped at max_norm, some are not
NO_GRAD = {2: {"experts"}}  # step index -> parameters with p.grad = None
CLIP_MAX_NORM = 1.5


def flat(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


def make_data():
    g = torch.Generator().manual_seed(1234)
    init = {k: torch.randn(*s, generator=g, dtype=torch.float32).double() for k, s in SHAPES.items()}
    grads = []
    for i in range(STEPS):
        step = {}
        for k, s in SHAPES.items():
            v = (torch.randn(*s, generator=g, dtype=torch.float32) * GRAD_SCALES[i]).float().double()
            step[k] = None if k in NO_GRAD.get(i, set()) else v
        grads.append(step)
    return init, grads


def run(init, grads, make_opt, lrs):
    params = {k: v.clone().requires_grad_() for k, v in init.items()}
    opt = make_opt(params)
    after = []
    for i in range(STEPS):
        for group in opt.param_groups:
            group["lr"] = lrs[i]
        for k, p in params.items():
            g = grads[i][k]
            p.grad = None if g is None else g.clone()
        opt.step()
        after.append({k: flat(p) for k, p in params.items()})
    return after


def main():
    torch.set_default_dtype(torch.float64)
    init, grads = make_data()
    cases = []

    for nesterov in (False, True):
        lrs = [0.1, 0.1, 0.05, 0.05, 0.02]
        cases.append({
            "name": "sgd_nesterov" if nesterov else "sgd_momentum",
            "optimizer": "SGD",
            "options": {"momentum": 0.9, "nesterov": nesterov, "weightDecay": 0.01},
            "lrs": lrs,
            "after": run(init, grads, lambda ps: torch.optim.SGD(
                list(ps.values()), lr=lrs[0], momentum=0.9, nesterov=nesterov, weight_decay=0.01), lrs),
        })

    lrs = [1e-2, 1e-2, 5e-3, 5e-3, 2e-3]
    cases.append({
        "name": "adam",
        "optimizer": "Adam",
        "options": {"betas": [0.9, 0.999], "eps": 1e-8, "weightDecay": 0.01},
        "lrs": lrs,
        "after": run(init, grads, lambda ps: torch.optim.Adam(
            list(ps.values()), lr=lrs[0], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01), lrs),
    })

    def adamw(ps):
        decay = [p for k, p in ps.items() if p.dim() > 1]
        no_decay = [p for k, p in ps.items() if p.dim() <= 1]
        return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                 lr=lrs[0], betas=(0.9, 0.95), eps=1e-8)

    cases.append({
        "name": "adamw",
        "optimizer": "AdamW",
        "options": {"betas": [0.9, 0.95], "eps": 1e-8, "weightDecay": 0.1},
        "lrs": lrs,
        "after": run(init, grads, adamw, lrs),
    })

    clip = []
    for i in range(STEPS):
        gs = {k: v.clone() for k, v in grads[i].items() if v is not None}
        ps = []
        for v in gs.values():
            p = torch.zeros_like(v, requires_grad=True)
            p.grad = v.clone()
            ps.append(p)
        total = torch.nn.utils.clip_grad_norm_(ps, CLIP_MAX_NORM)
        clip.append({"totalNorm": float(total), "grads": {k: flat(p.grad) for k, p in zip(gs.keys(), ps)}})

    data = {
        "meta": {"torch": torch.__version__, "dtype": "float64", "steps": STEPS, "clipMaxNorm": CLIP_MAX_NORM},
        "shapes": SHAPES,
        "init": {k: flat(v) for k, v in init.items()},
        "grads": [{k: (None if v is None else flat(v)) for k, v in step.items()} for step in grads],
        "cases": cases,
        "clip": clip,
    }
    with open(OUT, "w") as f:
        json.dump(data, f)
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
