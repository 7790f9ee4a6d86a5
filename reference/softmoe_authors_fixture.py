"""Writes test/fixtures/softmoe_authors.json: the Soft MoE patch classifier as Chung et al.'s code
defines it (run: /usr/bin/python3 reference/softmoe_authors_fixture.py).

Written here from the facts of their code (YoungseogChung/beyond-param-count, mnist_experiments:
SoftMoeModel.forward with normalize_moe_input, make_phi 'uniform', construct_mlp_small experts,
construct_linear_layer decoder, torchvision Normalize((0.1307,), (0.3081,))), in plain PyTorch:
  - pixel bytes b scaled and standardised, (b / 255 - 0.1307) / 0.3081, the image cut into 4 square
    patches in row-major order -> X [B, 4, d] (their MNIST: 28x28 images, d = 196; here 12x12 images,
    d = 36, which keeps the fixture small and changes nothing in the formulation)
  - X-hat = X / (|X| + 1e-6) per token; Phi-hat = scale * Phi / (|Phi| + 1e-6) per column
  - logits = X-hat Phi-hat; D = softmax over tokens, C = softmax over slots
  - slots = D^T X-hat (the normalised tokens), expert j = Linear(d -> h, no bias), ReLU, Linear(h -> d, no bias),
    h = floor(4 d / n) (their expert_fn_multiplier = 4 / n)
  - Y = C outputs; logits = decoder(flatten(Y)), a Linear(4 d -> 10) without bias
  - loss = cross entropy (mean over the batch)
Weights are stored in moe-ts layout (expert w1 [n, d, h], w2 [n, h, d], decoder weight [10, 4 d]).
Their eps sits outside the square root (|x| + eps); moe-ts's inside (sqrt(|x|^2 + eps)): on these
inputs the two differ by about 1e-7 relative, far below the test's tolerance.
"""
import json
import os

import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures")


def tensor_entry(v):
    return {"shape": list(v.shape), "data": [float(x) for x in v.detach().reshape(-1).tolist()]}


def authors_forward(pixels, S, phi, scale, w1, w2, dec):
    B = pixels.shape[0]
    P = S // 2
    x = (pixels.reshape(B, S, S) / 255 - 0.1307) / 0.3081
    # b (h p1) (w p2) -> b (h w) (p1 p2): four PxP patches, row-major
    tokens = x.reshape(B, 2, P, 2, P).permute(0, 1, 3, 2, 4).reshape(B, 4, P * P)
    xn = tokens / (tokens.pow(2).sum(2, keepdim=True).sqrt() + 1e-6)
    phin = scale * (phi / (phi.pow(2).sum(0, keepdim=True).sqrt() + 1e-6))
    lg = xn @ phin  # [B, 4, n]
    D = torch.softmax(lg, dim=1)
    C = torch.softmax(lg, dim=2)
    slots = D.transpose(1, 2) @ xn  # [B, n, d]: from the normalised tokens
    outs = torch.stack([F.relu(slots[:, j] @ w1[j]) @ w2[j] for j in range(w1.shape[0])], dim=1)
    Y = C @ outs  # [B, 4, d]
    return Y.reshape(B, -1) @ dec.t(), D, C


def case(S, n, B, seed):
    torch.manual_seed(seed)
    d = (S // 2) ** 2
    h = 4 * d // n
    pixels = torch.randint(0, 256, (B, S * S)).float()
    pixels[0, : S * S // 2] = 0.0  # a blank top half: two tokens of constant pixels
    labels = torch.randint(0, 10, (B,))
    phi = (torch.rand(d, n) * 2 - 1).requires_grad_()  # make_phi 'uniform'
    scale = torch.tensor([1.0]).requires_grad_()
    # nn.Linear's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    w1 = ((torch.rand(n, d, h) * 2 - 1) / d ** 0.5).requires_grad_()
    w2 = ((torch.rand(n, h, d) * 2 - 1) / h ** 0.5).requires_grad_()
    dec = ((torch.rand(10, 4 * d) * 2 - 1) / (4 * d) ** 0.5).requires_grad_()
    logits, D, C = authors_forward(pixels, S, phi, scale, w1, w2, dec)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    return {
        "meta": {"imageSize": S, "n": n, "B": B, "h": h, "seed": seed},
        "pixels": tensor_entry(pixels), "labels": tensor_entry(labels.float()),
        "phi": tensor_entry(phi), "scale": tensor_entry(scale), "w1": tensor_entry(w1), "w2": tensor_entry(w2),
        "decoder": tensor_entry(dec), "logits": tensor_entry(logits), "D": tensor_entry(D), "C": tensor_entry(C),
        "loss": tensor_entry(loss.reshape(1)),
        "dphi": tensor_entry(phi.grad), "dscale": tensor_entry(scale.grad), "dw1": tensor_entry(w1.grad),
        "dw2": tensor_entry(w2.grad), "ddecoder": tensor_entry(dec.grad),
    }


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    print("torch", torch.__version__)
    # few wide experts and many narrow ones (h = 36 and h = 4); the test runs both of moe-ts's formulations on each
    cases = {"n4": case(12, 4, 6, 3), "n36": case(12, 36, 5, 4)}
    path = os.path.join(OUT, "softmoe_authors.json")
    with open(path, "w") as f:
        json.dump(cases, f)
    print("wrote", path, {k: v["meta"] for k, v in cases.items()})
