"""The PyTorch end of the round trip moe-ts -> HF -> PyTorch -> HF -> moe-ts (test/round-trip.test.ts).

For each family in test/round-trip-model.ts (OLMoE, Qwen2-MoE, Qwen3-MoE):
1. moe-ts exports a small MoE decoder as a float32 HF directory (toHF + writeHFDir, run from dist/);
2. the plain-PyTorch reference of reference/moe_decoder_fixture.py loads it and computes logits on a
   fixed prompt (logits0);
3. "training there": a few Adam steps of next-byte loss on one sentence, with torch autograd through
   that reference forward, so the weights that come back differ from those that went out;
4. re-saved as HF checkpoints come out of PyTorch training: bfloat16, two safetensors shards with
   model.safetensors.index.json, tensors in sorted order, config.json with torch_dtype bfloat16;
5. logits1: the reference forward of the re-saved (bf16) weights.
Writes test/fixtures/round-trip/<arch>/ (the re-saved checkpoint, a few dozen KB) and
test/fixtures/round-trip/<arch>.json (the export's SHA-256, prompt, logits0, logits1, losses).
The test recreates step 1 and checks the hash, compares moe-ts's logits with logits0 and, loading
the committed re-saved checkpoint, with logits1. It never runs Python.

    npx tsc -p tsconfig.json && /usr/bin/python3 reference/round_trip_fixture.py
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from moe_decoder_fixture import forward, read_dir, sha256  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = ["olmoe", "qwen2_moe", "qwen3_moe"]
PROMPT = [256] + list(b"All human")
TEXT = [256] + list(b"All human beings are born free and equal in dignity and rights.")
STEPS = 5
LR = 3e-2


def export_from_moe_ts(arch, out):
    helper = os.path.join(ROOT, "dist", "test", "round-trip-model.js")
    js = f"import({json.dumps(helper)}).then((m) => console.log(m.writeMoeTsCheckpoint({json.dumps(out)}, {json.dumps(arch)})))"
    r = subprocess.run(["node", "-e", js], check=True, capture_output=True, text=True, env={**os.environ, "MOE_NO_REEXEC": "1"})
    return r.stdout.strip()


def train(cfg, W):
    params = {k: v.clone().requires_grad_(True) for k, v in W.items()}
    opt = torch.optim.Adam(list(params.values()), lr=LR)
    ids = torch.tensor(TEXT)
    losses = []
    for _ in range(STEPS):
        logits, _ = forward(cfg, params, TEXT)
        loss = F.cross_entropy(logits[:-1], ids[1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return {k: v.detach() for k, v in params.items()}, losses


def write_safetensors(path, tensors):
    header = {"__metadata__": {"format": "pt"}}
    blobs = []
    off = 0
    for name, t in tensors:
        b = t.contiguous().view(torch.int16).numpy().tobytes()
        header[name] = {"dtype": "BF16", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def resave(cfg, W, out):
    """bf16, two shards and an index, as save_pretrained writes a sharded checkpoint."""
    os.makedirs(out, exist_ok=True)
    names = sorted(W)
    bf = {n: W[n].to(torch.bfloat16) for n in names}
    total = sum(t.numel() * 2 for t in bf.values())
    shards, cur, size = [[]], 0, 0
    for n in names:
        if size >= total / 2 and len(shards) == 1:
            shards.append([])
        shards[-1].append(n)
        size += bf[n].numel() * 2
    weight_map = {}
    for i, group in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(os.path.join(out, fname), [(n, bf[n]) for n in group])
        for n in group:
            weight_map[n] = fname
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump({**cfg, "torch_dtype": "bfloat16"}, f, indent=2, sort_keys=True)
    return {n: t.float() for n, t in bf.items()}


def main():
    out_root = os.path.join(ROOT, "test", "fixtures", "round-trip")
    os.makedirs(out_root, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for arch in FAMILIES:
            src = os.path.join(tmp, arch)
            printed = export_from_moe_ts(arch, src)
            cfg, W = read_dir(src)
            digest = sha256(os.path.join(src, "model.safetensors"))
            assert printed == digest, (printed, digest)
            with torch.no_grad():
                logits0, _ = forward(cfg, W, PROMPT)
            trained, losses = train(cfg, W)
            dst = os.path.join(out_root, arch)
            shutil.rmtree(dst, ignore_errors=True)
            back = resave(cfg, trained, dst)
            with torch.no_grad():
                logits1, routing1 = forward(cfg, back, PROMPT)
            fx = {
                "arch": arch, "torch": torch.__version__, "exportSha256": digest, "ids": PROMPT, "shape": list(logits0.shape),
                "trainText": bytes(TEXT[1:]).decode(), "trainSteps": STEPS, "lr": LR, "losses": losses,
                "logits0": [float(f"{v:.8g}") for v in logits0.flatten().tolist()],
                "logits1": [float(f"{v:.8g}") for v in logits1.flatten().tolist()],
                "routing1": routing1,
            }
            with open(os.path.join(out_root, f"{arch}.json"), "w") as f:
                json.dump(fx, f)
            print(f"{arch}: export {digest[:12]}, loss {losses[0]:.3f} -> {losses[-1]:.3f}, "
                  f"max |logits1 - logits0| {float((logits1 - logits0).abs().max()):.3f}, {sum(os.path.getsize(os.path.join(dst, f)) for f in os.listdir(dst))} bytes")


if __name__ == "__main__":
    sys.exit(main())
