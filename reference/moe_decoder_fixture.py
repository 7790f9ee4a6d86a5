"""Plain-PyTorch forward of the MoE decoder families (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE), written
from the families' published definitions (not HF transformers' code), and the fixtures
test/moe-decoder.test.ts compares against.

For each family it runs `moe create --arch A --preset tiny --seed 1` (the TypeScript CLI, built
into dist/), reads the HF directory it wrote (config.json + safetensors, parsed here with json and
struct), runs the forward in float32 on a fixed prompt, and writes
test/fixtures/moe-decoder/<arch>.json: the prompt ids, logits [T, V], each MoE layer's chosen
experts and gate weights, and the SHA-256 of model.safetensors (the test recreates the directory
with the same seed and checks the hash first, so a changed generator is reported as such).

    npx tsc -p tsconfig.json && /usr/bin/python3 reference/moe_decoder_fixture.py
    /usr/bin/python3 reference/moe_decoder_fixture.py --dir SOME_HF_DIR   # print logits of any HF dir
"""

import argparse
import hashlib
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"]
SEED = 1
PROMPT = [256] + list(b"MoE, hi!!")  # <|bos|> then 9 bytes: T = 10, longer than the tiny Mixtral's window of 6


# ---- reading an HF directory -------------------------------------------------------------------

def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        raw = bytearray(data[b:end])
        if e["dtype"] == "F32":
            t = torch.frombuffer(raw, dtype=torch.float32)
        elif e["dtype"] == "F16":
            t = torch.frombuffer(raw, dtype=torch.float16).float()
        elif e["dtype"] == "BF16":
            t = torch.frombuffer(raw, dtype=torch.bfloat16).float()
        else:
            raise ValueError(f"{path}: tensor {name}: dtype {e['dtype']} not handled")
        out[name] = t.reshape(e["shape"]).clone()
    return out


def read_dir(d):
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    index = os.path.join(d, "model.safetensors.index.json")
    w = {}
    if os.path.exists(index):
        with open(index) as f:
            for shard in sorted(set(json.load(f)["weight_map"].values())):
                w.update(read_safetensors(os.path.join(d, shard)))
    else:
        w = read_safetensors(os.path.join(d, "model.safetensors"))
    return cfg, w


# ---- the forward ---------------------------------------------------------------------------------

def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def rope_tables(cfg, hd, T):
    theta = cfg.get("rope_theta", 1e6 if cfg["model_type"] == "mixtral" else 10000.0)
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    pos = torch.arange(T, dtype=torch.float64)
    rs = cfg.get("rope_scaling")
    if rs:
        kind = rs.get("rope_type", rs.get("type"))
        if kind != "linear":
            raise ValueError(f"rope_scaling {kind} not implemented in the reference")
        pos = pos / rs["factor"]
    freqs = torch.outer(pos, inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().float(), emb.sin().float()


def swiglu(x, gate, up, down):
    return (F.silu(x @ gate.T) * (x @ up.T)) @ down.T


def forward(cfg, W, ids):
    mt = cfg["model_type"]
    d = cfg["hidden_size"]
    H = cfg["num_attention_heads"]
    G = cfg.get("num_key_value_heads", H)
    hd = cfg.get("head_dim") or d // H
    eps = cfg.get("rms_norm_eps", 1e-5 if mt in ("mixtral", "olmoe") else 1e-6)
    L = cfg["num_hidden_layers"]
    k = cfg["num_experts_per_tok"]
    E = cfg["num_local_experts"] if mt == "mixtral" else cfg["num_experts"]
    renorm = True if mt == "mixtral" else cfg.get("norm_topk_prob", False)
    window = cfg.get("sliding_window") if mt == "mixtral" else None
    T = len(ids)
    cos, sin = rope_tables(cfg, hd, T)  # [T, hd]
    i = torch.arange(T).unsqueeze(1)
    j = torch.arange(T).unsqueeze(0)
    masked = j > i
    if window is not None:
        masked = masked | (i - j >= window)

    x = W["model.embed_tokens.weight"][torch.tensor(ids)]
    routing = []
    for l in range(L):
        p = f"model.layers.{l}."
        h = rms_norm(x, W[p + "input_layernorm.weight"], eps)
        a = p + "self_attn."
        q = h @ W[a + "q_proj.weight"].T
        kk = h @ W[a + "k_proj.weight"].T
        v = h @ W[a + "v_proj.weight"].T
        if a + "q_proj.bias" in W:
            q, kk, v = q + W[a + "q_proj.bias"], kk + W[a + "k_proj.bias"], v + W[a + "v_proj.bias"]
        if mt == "olmoe":  # QK-norm over the whole projection
            q = rms_norm(q, W[a + "q_norm.weight"], eps)
            kk = rms_norm(kk, W[a + "k_norm.weight"], eps)
        q = q.view(T, H, hd).transpose(0, 1)  # [H, T, hd]
        kk = kk.view(T, G, hd).transpose(0, 1)  # [G, T, hd]
        v = v.view(T, G, hd).transpose(0, 1)
        if mt == "qwen3_moe":  # QK-norm per head
            q = rms_norm(q, W[a + "q_norm.weight"], eps)
            kk = rms_norm(kk, W[a + "k_norm.weight"], eps)
        q = q * cos + rotate_half(q) * sin
        kk = kk * cos + rotate_half(kk) * sin
        kk = kk.repeat_interleave(H // G, dim=0)  # query head h reads key head h // (H/G)
        v = v.repeat_interleave(H // G, dim=0)
        s = (q @ kk.transpose(1, 2)) / math.sqrt(hd)
        s = s.masked_fill(masked, float("-inf"))
        o = torch.softmax(s, dim=-1) @ v  # [H, T, hd]
        x = x + o.transpose(0, 1).reshape(T, H * hd) @ W[a + "o_proj.weight"].T

        h = rms_norm(x, W[p + "post_attention_layernorm.weight"], eps)
        moe = p + ("block_sparse_moe." if mt == "mixtral" else "mlp.")
        if moe + "gate.weight" in W:
            probs = torch.softmax(h @ W[moe + "gate.weight"].T, dim=-1)
            gw, gi = torch.topk(probs, k, dim=-1)
            if renorm:
                gw = gw / gw.sum(-1, keepdim=True)
            routing.append({"layer": l, "indices": gi.flatten().tolist(), "weights": [float(f"{v:.9g}") for v in gw.flatten().tolist()]})
            out = torch.zeros_like(h)
            names = ("w1", "w3", "w2") if mt == "mixtral" else ("gate_proj", "up_proj", "down_proj")
            for t in range(T):
                for c in range(k):
                    e = int(gi[t, c])
                    ex = f"{moe}experts.{e}."
                    y = swiglu(h[t:t + 1], *(W[ex + n + ".weight"] for n in names))
                    out[t] += gw[t, c] * y[0]
            if p + "mlp.shared_expert.gate_proj.weight" in W:
                sh = swiglu(h, *(W[p + f"mlp.shared_expert.{n}.weight"] for n in ("gate_proj", "up_proj", "down_proj")))
                if p + "mlp.shared_expert_gate.weight" in W:
                    sh = torch.sigmoid(h @ W[p + "mlp.shared_expert_gate.weight"].T) * sh
                out = out + sh
        else:  # a dense layer (Qwen's mlp_only_layers / decoder_sparse_step)
            out = swiglu(h, *(W[p + f"mlp.{n}.weight"] for n in ("gate_proj", "up_proj", "down_proj")))
        x = x + out
    x = rms_norm(x, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings", False) else W["lm_head.weight"]
    return x @ head.T, routing


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", help="print the logits of this HF directory instead of writing fixtures")
    ap.add_argument("--out", default=os.path.join(ROOT, "test", "fixtures", "moe-decoder"))
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    if args.dir:
        cfg, W = read_dir(args.dir)
        logits, _ = forward(cfg, W, PROMPT)
        print(logits)
        return
    os.makedirs(args.out, exist_ok=True)
    cli = os.path.join(ROOT, "dist", "src", "cli", "main.js")
    with tempfile.TemporaryDirectory() as tmp:
        for fam in FAMILIES:
            d = os.path.join(tmp, fam)
            subprocess.run(["node", cli, "create", "--arch", fam, "--preset", "tiny", "--seed", str(SEED), "--out", d], check=True,
                           env={**os.environ, "MOE_NO_REEXEC": "1"})
            cfg, W = read_dir(d)
            logits, routing = forward(cfg, W, PROMPT)
            fx = {
                "arch": fam, "preset": "tiny", "seed": SEED, "weightsSha256": sha256(os.path.join(d, "model.safetensors")),
                "torch": torch.__version__, "ids": PROMPT, "shape": list(logits.shape),
                "logits": [float(f"{v:.9g}") for v in logits.flatten().tolist()], "routing": routing,
            }
            path = os.path.join(args.out, f"{fam}.json")
            with open(path, "w") as f:
                json.dump(fx, f)
            print(f"{path}: logits {list(logits.shape)}, |max| {logits.abs().max():.3f}, {len(routing)} MoE layers")


if __name__ == "__main__":
    sys.exit(main())
