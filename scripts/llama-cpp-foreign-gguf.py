"""A GGUF that moe did not write: llama.cpp's own writer (gguf-py) and its real Qwen2 BPE vocabulary.

Usage: python3 scripts/llama-cpp-foreign-gguf.py GGUF_PY_DIR VOCAB.gguf SRC.gguf OUT.gguf [q8_0|f32]

GGUF_PY_DIR is llama.cpp's gguf-py (in node-llama-cpp's llama/gitRelease.bundle: `git clone` it),
VOCAB.gguf its models/ggml-vocab-qwen2.gguf (151936 tokens, 151387 merges, no weights), SRC.gguf a
qwen2moe GGUF (e.g. from scripts/llama-cpp-check.mjs). The output keeps SRC's architecture keys and
layer tensors, takes the tokenizer keys from VOCAB, and draws new token_embd/output rows for the
larger vocabulary (numpy, seed 0). Tensors are written by gguf-py's GGUFWriter and, with q8_0,
quantised by gguf-py's quantiser: the file's bytes come from llama.cpp's code, not moe's.
Needs numpy only.
"""
import sys

gguf_py, vocab_path, src_path, out_path = sys.argv[1:5]
dtype = sys.argv[5] if len(sys.argv) > 5 else 'q8_0'
sys.path.insert(0, gguf_py)
import numpy as np  # noqa: E402
import gguf  # noqa: E402
from gguf import quants  # noqa: E402


def field_value(f):
    t = f.types[0]
    if t == gguf.GGUFValueType.ARRAY:
        return [f.contents(i) for i in range(len(f.data))] if hasattr(f, 'contents') else [f.parts[i].tobytes().decode() if f.types[1] == gguf.GGUFValueType.STRING else f.parts[i][0] for i in f.data]
    return f.contents()


src = gguf.GGUFReader(src_path)
voc = gguf.GGUFReader(vocab_path)
arch = src.fields['general.architecture'].contents()
assert arch == 'qwen2moe', f'{src_path}: expected a qwen2moe GGUF, got {arch}'
n_vocab = len(voc.fields['tokenizer.ggml.tokens'].data)
w = gguf.GGUFWriter(out_path, arch)
skip = {'general.architecture', 'GGUF.version', 'GGUF.tensor_count', 'GGUF.kv_count', 'general.alignment', 'general.file_type'}
for k, f in src.fields.items():
    if k in skip or k.startswith('tokenizer.'):
        continue
    v = f.contents()
    if k == f'{arch}.vocab_size':
        v = n_vocab
    w.add_key_value(k, v, f.types[0], f.types[1] if len(f.types) > 1 else None)
for k, f in voc.fields.items():
    if k.startswith('tokenizer.'):
        w.add_key_value(k, f.contents(), f.types[0], f.types[1] if len(f.types) > 1 else None)
w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if dtype == 'q8_0' else gguf.LlamaFileType.ALL_F32)

rng = np.random.default_rng(0)


def put(name, arr):
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if dtype == 'q8_0' and arr.ndim >= 2 and arr.shape[-1] % 32 == 0 and 'ffn_gate_inp' not in name:
        q = quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0)
        w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    else:
        w.add_tensor(name, arr)


for t in src.tensors:
    assert t.tensor_type == gguf.GGMLQuantizationType.F32, f'{t.name}: SRC must be F32'
    shape = [int(x) for x in reversed(t.shape)]  # ne reversed = row-major shape
    data = np.array(t.data, dtype=np.float32).reshape(shape)
    if t.name in ('token_embd.weight', 'output.weight'):
        data = rng.uniform(-np.sqrt(3 / shape[1]), np.sqrt(3 / shape[1]), size=(n_vocab, shape[1])).astype(np.float32)
    put(t.name, data)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print(f'{out_path}: {arch}, vocabulary {n_vocab}, {len(src.tensors)} tensors, {dtype}')
