"""Convert a GGUF file (llama.cpp's format) into a plain Hugging Face causal-LM folder.

transformers can read GGUF directly, but it dequantises every tensor on each load (~15 s for a
135M model on 2 cores); converting once to fp32 safetensors makes later loads take well under
a second and lets everything downstream treat the model like any other folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from tunesmith.errors import TunesmithError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

_MAGIC = b"GGUF"
# ChatML (SmolLM2, Qwen2.5) ends each turn with this token; generation must stop there too,
# not only at the end-of-text token the GGUF may name as eos, or a reply runs into a new turn.
_CHATML_END = "<|im_end|>"


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Write a fp32 safetensors model and its tokenizer (chat template included) into out_dir."""
    check_magic(gguf_path)
    tokenizer, model = _load(gguf_path)
    # The model came through the GGUF quantizer; saving with it attached fails on transformers 5.x,
    # and a leftover quantization_config would make the folder reload as if it were still GGUF.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    _set_stop_tokens(model, tokenizer)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def check_magic(gguf_path: Path) -> None:
    with gguf_path.open("rb") as f:
        if f.read(len(_MAGIC)) != _MAGIC:
            raise TunesmithError(
                f"{gguf_path} is not a GGUF file (it does not start with the GGUF magic bytes); "
                "point --model at a .gguf model file"
            )


def _load(gguf_path: Path) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = {"pretrained_model_name_or_path": gguf_path.parent, "gguf_file": gguf_path.name}
    try:
        tokenizer = AutoTokenizer.from_pretrained(**where)
        model = AutoModelForCausalLM.from_pretrained(**where, dtype=torch.float32)
    except Exception as e:
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise TunesmithError(
            f"transformers {transformers.__version__} cannot load {gguf_path} ({reason}); "
            "use a GGUF of an architecture transformers supports (Llama, Qwen2, Mistral, Gemma, ...) "
            "or the model's Hugging Face folder or hub id"
        ) from None
    return tokenizer, model


def _set_stop_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    gen = model.generation_config
    stops = list(gen.eos_token_id) if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    stops.append(tokenizer.eos_token_id)
    if _CHATML_END in (tokenizer.chat_template or ""):
        stops.append(tokenizer.convert_tokens_to_ids(_CHATML_END))
    stops = list(dict.fromkeys(t for t in stops if t is not None))
    if not stops:
        return
    gen.eos_token_id = stops if len(stops) > 1 else stops[0]
    if gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
