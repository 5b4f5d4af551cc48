"""An sft run's causal LM as one GGUF file (llama.cpp's format) and an Ollama Modelfile, checked through transformers.

The file is laid out as llama.cpp's convert_hf_to_gguf.py lays out Llama and Qwen2 (its LlamaModel and Qwen2Model):
the same metadata keys, q_proj/k_proj rows permuted for llama.cpp's rotary layout (Llama only), norms and other 1-D
tensors in F32, no output.weight when the head is the embedding, and a "gpt2" BPE vocabulary whose merges, special
ids and chat template come from gguf.SpecialVocab, the reader the converter uses. Only the gguf package is needed.

    f16   2-D weights in F16
    q8_0  2-D weights in Q8_0 (blocks of 32 along a row); a row whose length is not a multiple of 32 stays F16

The check loads the file back with transformers and compares its logits twice: with the run's own weights (what F16
or Q8_0 costs) and with the run's weights rounded as the file stores them, which the file must reproduce to
float32 precision: a wrong permutation, tensor name or head count shows up there however small the rounding.
"""

from __future__ import annotations

import json
import logging
import math
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from gguf import GGMLQuantizationType as QType
from torch import nn

from tunesmith.data.chat import ChatConfig, Conversation
from tunesmith.errors import TunesmithError
from tunesmith.inference import GGUF_FILE

log = logging.getLogger("tunesmith")

MODELFILE = "Modelfile"
OUTTYPES = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
ARCHITECTURES = {"LlamaForCausalLM": gguf.MODEL_ARCH.LLAMA, "Qwen2ForCausalLM": gguf.MODEL_ARCH.QWEN2}
GREEDY_TOKENS = 8  # greedy tokens compared per prompt: where rounding flips a choice, it shows in the first few
# The file holds exactly the rounded weights and transformers runs the same float32 code on them: measured, the
# logits came out bit-identical (difference 0.0) on the tiny test model and on SmolLM2-135M, in F16 and Q8_0. The
# margin is for summation order alone. Measured on the tiny test model (all logits under 1), a file without the q/k
# permutation differs by 6.2e-4: six times the margin there, and far more on a real model's larger logits.
STORED_TOLERANCE = 1e-4  # of the largest logit, or absolute when that is under 1
# F16 keeps 11 significant bits, so each weight in its normal range moves by at most 2^-11 of itself. Measured, that
# moved SmolLM2-135M's logits (30 layers) by 1.1e-3 of the largest one (0.045 on 40.2): 2e-2 leaves deeper models
# room and still stops a run whose answers F16 would visibly change.
F16_TOLERANCE = 2e-2  # of the largest logit, or absolute when that is under 1

# The pre-tokenizer names llama.cpp knows (tokenizer.ggml.pre) by the splitting they stand for, as transformers'
# tokenizer.json spells it. llama.cpp's converter names them by hashing a model's token ids for a test string,
# which only recognises unchanged published vocabularies; the splitting itself is what llama.cpp must reproduce.
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
_PRE_TOKENIZERS: dict[tuple[tuple[Any, ...], ...], str] = {
    (("ByteLevel", False, True),): "gpt-2",
    (("Digits", True), ("ByteLevel", False, True)): "smollm",
    (("Split", _QWEN2_SPLIT, "Isolated", False), ("ByteLevel", False, False)): "qwen2",
    (("Split", _LLAMA3_SPLIT, "Isolated", False), ("ByteLevel", False, False)): "llama-bpe",
}

_IM_START, _IM_END = "<|im_start|>", "<|im_end|>"
# Ollama's Go template for ChatML. Without .Messages Ollama renders it once per user turn and the answer after it,
# the system message in the first only, and cuts the last one after {{ .Response }}: _through_ollama does the same.
CHATML_TEMPLATE = (
    "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n{{ .Response }}<|im_end|>\n"
)


# --- what can be exported ------------------------------------------------------------------------------


def check_supported(architecture: str, config: Any, tokenizer: Any) -> None:
    """Refuse, in one line, a model this writer would get wrong; cheap enough to run before any weights load."""
    if architecture not in ARCHITECTURES:
        raise TunesmithError(
            f"--format gguf writes {' and '.join(ARCHITECTURES)} models; this run's model is a {architecture}: "
            "export it with --format merged and convert that folder with llama.cpp's convert_hf_to_gguf.py"
        )
    hparams = config.to_dict()
    rope = hparams.get("rope_parameters") or hparams.get("rope_scaling") or {}
    if (rope_type := rope.get("rope_type", rope.get("type", "default"))) != "default":
        raise TunesmithError(
            f"--format gguf writes models with plain RoPE; this {architecture} uses {rope_type!r} scaling: "
            "export it with --format merged and convert that folder with llama.cpp's convert_hf_to_gguf.py"
        )
    biased = hparams.get("attention_bias") is True or hparams.get("mlp_bias") is True
    if architecture == "LlamaForCausalLM" and biased:  # Qwen2's q/k/v biases are part of its architecture
        raise TunesmithError(
            f"--format gguf writes Llama without attention or MLP biases; this {architecture} has them: "
            "export it with --format merged and convert that folder with llama.cpp's convert_hf_to_gguf.py"
        )
    _pre_tokenizer(tokenizer)


def _pre_tokenizer(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    steps = _steps(json.loads(backend.to_str())["pre_tokenizer"]) if backend is not None else [("none",)]
    name = _PRE_TOKENIZERS.get(tuple(steps))
    if name is None:
        raise TunesmithError(
            f"--format gguf writes byte-level BPE tokenizers that split text as GPT-2, SmolLM, Qwen2 or Llama 3 do; "
            f"this tokenizer's pre-tokenizer is {[s[0] for s in steps]}: export with --format merged and convert "
            "that folder with llama.cpp's convert_hf_to_gguf.py"
        )
    return name


def _steps(pre: dict[str, Any] | None) -> list[tuple[Any, ...]]:
    """A pre-tokenizer reduced to what changes where text splits (offset trimming does not)."""
    if pre is None:
        return []
    kind = pre["type"]
    if kind == "Sequence":
        return [step for p in pre["pretokenizers"] for step in _steps(p)]
    if kind == "ByteLevel":
        return [(kind, pre.get("add_prefix_space", True), pre.get("use_regex", True))]
    if kind == "Split":
        pattern = pre["pattern"].get("Regex", pre["pattern"].get("String"))
        return [(kind, pattern, pre["behavior"], pre.get("invert", False))]
    if kind == "Digits":
        return [(kind, pre.get("individual_digits", False))]
    return [(kind,)]


# --- the file --------------------------------------------------------------------------------------------


def write_gguf(model: nn.Module, tokenizer: Any, path: Path, outtype: str, name: str | None = None) -> dict[str, Any]:
    """One GGUF file at `path` holding `model` (Llama or Qwen2) and its tokenizer."""
    if outtype not in OUTTYPES:
        raise TunesmithError(f"GGUF outtype {outtype!r} is not one of {', '.join(OUTTYPES)}")
    config = model.config
    check_supported(type(model).__name__, config, tokenizer)
    arch = ARCHITECTURES[type(model).__name__]
    with _quiet("gguf"):
        writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[arch])
        count = 0
        for _, gguf_name, data in _tensors(model, arch, for_file=True):
            encoded, qtype = _encode(gguf_name, data, outtype)
            writer.add_tensor(gguf_name, encoded, raw_dtype=qtype)
            count += 1
        _add_parameters(writer, arch, config.to_dict(), outtype, name)
        _add_vocab(writer, model, tokenizer)
        writer.write_header_to_file(path=path)
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file(progress=False)
        writer.close()
    return {"outtype": outtype, "tensors": count, "size_bytes": path.stat().st_size}


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """gguf logs what it writes at INFO, which tunesmith's command line would print as its own lines; its
    warnings (a token id out of range, no merges found) still show."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _tensors(model: nn.Module, arch: gguf.MODEL_ARCH, for_file: bool) -> Iterator[tuple[str, str, np.ndarray]]:
    """(transformers name, GGUF name, float32 values) of every tensor the file holds, permuted for the file or not."""
    config = model.config
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    state = model.state_dict()
    tied = "lm_head.weight" in state and torch.equal(state["lm_head.weight"], state["model.embed_tokens.weight"])
    for hf_name, tensor in state.items():
        if hf_name.endswith((".rotary_emb.inv_freq", ".attention.masked_bias", ".attention.bias")):
            continue
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp, like transformers, reuses token_embd as the head when output.weight is absent
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise TunesmithError(f"--format gguf has no llama.cpp name for the tensor {hf_name}; use --format merged")
        data = tensor.detach().to(torch.float32).cpu()
        if for_file and arch == gguf.MODEL_ARCH.LLAMA:
            if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
                data = _permute(data, heads, heads)
            elif hf_name.endswith(("k_proj.weight", "k_proj.bias")):
                data = _permute(data, heads, kv_heads)
        yield hf_name, gguf_name, data.numpy()


def _permute(weights: torch.Tensor, n_head: int, n_head_kv: int | None) -> torch.Tensor:
    """convert_hf_to_gguf's LlamaModel.permute: transformers' rotary halves become llama.cpp's interleaved pairs."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _qtype(gguf_name: str, data: np.ndarray, outtype: str) -> QType:
    if data.ndim <= 1 or gguf_name.endswith("_norm.weight"):
        return QType.F32  # llama.cpp's kernels take norms and other 1-D tensors in F32 only
    return QType.F16 if outtype == "f16" else QType.Q8_0


def _encode(gguf_name: str, data: np.ndarray, outtype: str) -> tuple[np.ndarray, QType]:
    qtype = _qtype(gguf_name, data, outtype)
    try:
        return gguf.quants.quantize(data, qtype), qtype
    except gguf.QuantError:  # a row that is not a whole number of Q8_0 blocks: the converter falls back to F16
        return gguf.quants.quantize(data, QType.F16), QType.F16


def _add_parameters(
    writer: gguf.GGUFWriter, arch: gguf.MODEL_ARCH, hp: dict[str, Any], outtype: str, name: str | None
) -> None:
    """The keys convert_hf_to_gguf's TextModel.set_gguf_parameters writes for these configs (plus LlamaModel's)."""
    writer.add_type(gguf.GGUFType.MODEL)
    if name:
        writer.add_name(name)
    writer.add_block_count(hp["num_hidden_layers"])
    writer.add_context_length(hp["max_position_embeddings"])
    writer.add_embedding_length(hp["hidden_size"])
    writer.add_feed_forward_length(hp["intermediate_size"])
    writer.add_head_count(hp["num_attention_heads"])
    if hp.get("num_key_value_heads") is not None:
        writer.add_head_count_kv(hp["num_key_value_heads"])
    rope = hp.get("rope_parameters") or {}
    if (theta := rope.get("rope_theta", hp.get("rope_theta"))) is not None:
        writer.add_rope_freq_base(theta)
    writer.add_layer_norm_rms_eps(hp["rms_norm_eps"])
    if (head_dim := hp.get("head_dim")) is not None:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_file_type(OUTTYPES[outtype])
    if arch == gguf.MODEL_ARCH.LLAMA:  # Qwen2Model writes neither: llama.cpp counts the tokens, derives n_rot
        writer.add_vocab_size(hp["vocab_size"])
        writer.add_rope_dimension_count(head_dim or hp["hidden_size"] // hp["num_attention_heads"])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _add_vocab(writer: gguf.GGUFWriter, model: nn.Module, tokenizer: Any) -> None:
    """convert_hf_to_gguf's _set_vocab_gpt2, with add_bos/add_eos measured from the tokenizer itself."""
    tokens, types = _vocab(tokenizer, model.config.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(tokenizer))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    with tempfile.TemporaryDirectory() as tmp:  # SpecialVocab reads the files a model folder has
        tokenizer.save_pretrained(tmp)
        model.config.save_pretrained(tmp)
        special = gguf.SpecialVocab(tmp, load_merges=True)
    # Without these keys llama.cpp falls back to a default per pre-tokenizer; the run's tokenizer already says
    # whether it adds BOS/EOS around a text, so the file says the same.
    ids = tokenizer("a")["input_ids"]
    special.add_special_token["bos"] = tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id
    special.add_special_token["eos"] = tokenizer.eos_token_id is not None and ids[-1] == tokenizer.eos_token_id
    special.add_to_gguf(writer, quiet=True)


def _vocab(tokenizer: Any, vocab_size: int) -> tuple[list[str], list[int]]:
    """convert_hf_to_gguf's get_vocab_base: every id up to the model's vocab size, typed as llama.cpp reads it."""
    vocab = tokenizer.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise TunesmithError(
            f"the tokenizer has ids up to {max(vocab.values())} but the model only {vocab_size} embeddings; "
            "the run's model and tokenizer do not belong together"
        )
    by_id = {i: t for t, i in vocab.items()}
    added, decoder = tokenizer.get_added_vocab(), tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        token = by_id[i]
        if token not in added:
            types.append(gguf.TokenType.NORMAL)
        else:
            if not decoder[i].normalized:  # llama.cpp takes added tokens as already normalised: spell them so
                token = tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))
            if decoder[i].special or _looks_special(token):
                types.append(gguf.TokenType.CONTROL)
            else:
                token = token.replace("\u2581", " ")
                types.append(gguf.TokenType.USER_DEFINED)
        tokens.append(token)
    return tokens, types


def _looks_special(token: str) -> bool:
    """convert_hf_to_gguf's does_token_look_special: added tokens some models forget to mark special."""
    return (
        token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (token.startswith("<|") and token.endswith("|>"))
        or (token.startswith("<｜") and token.endswith("｜>"))
        or (token.startswith("<unused") and token.endswith(">"))
    )


# --- the Modelfile ---------------------------------------------------------------------------------------


def write_modelfile(folder: Path, tokenizer: Any, stops: list[int], chat: ChatConfig) -> str:
    """`folder/Modelfile` for `ollama create NAME -f Modelfile`: the template when the run's is ChatML, the system
    message the run answers with by default, and the tokens that end an answer. Returns its text."""
    lines = ["# ollama create NAME -f Modelfile (in this folder), then: ollama run NAME", f"FROM ./{GGUF_FILE}"]
    system = chat.system_prompt or None
    chatml, default_system = _chatml(tokenizer, system)
    if chatml:
        lines.append(f'TEMPLATE """{CHATML_TEMPLATE}"""')
        system = system or default_system
    else:
        lines.append(
            "# the run's chat template is not ChatML, so no TEMPLATE is written: Ollama picks one from the "
            "GGUF's tokenizer.chat_template"
        )
    if system and '"""' not in system:
        lines.append(f'SYSTEM """{system}"""')
    elif system:
        lines.append('# the run\'s system message holds """, which a Modelfile cannot quote: set it with /set system')
    if chat.prompt_template:
        lines.append(f"# this run wrapped each prompt in --prompt-template {chat.prompt_template!r}: send it filled in")
    tokens = [_IM_END] if chatml else []
    tokens += [tokenizer.convert_ids_to_tokens(i) for i in stops]
    lines += [f"PARAMETER stop {json.dumps(t, ensure_ascii=False)}" for t in dict.fromkeys(tokens) if t]
    text = "\n".join(lines) + "\n"
    (folder / MODELFILE).write_text(text, encoding="utf-8")
    return text


def _chatml(tokenizer: Any, system: str | None) -> tuple[bool, str | None]:
    """Whether CHATML_TEMPLATE, as Ollama renders it, gives the model exactly the text the run's chat template
    gives for the conversations Ollama will send; and the system message the run's template adds by itself."""
    template = tokenizer.chat_template
    if not isinstance(template, str) or _IM_START not in template or _IM_END not in template:
        return False, None
    turns: Conversation = [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How are you?"},
    ]
    probes = [turns[:1], turns]
    given = [{"role": "system", "content": system or "Be brief."}]
    if not all(_render(tokenizer, given + p) == _through_ollama(given + p) for p in probes):
        return False, None
    if system:
        return True, None
    # Without a system message some ChatML templates add their own (SmolLM2, Qwen2.5): so will the Modelfile.
    alone = _render(tokenizer, turns[:1])
    found = re.match(r"<\|im_start\|>system\n(.*?)<\|im_end\|>\n", alone, re.DOTALL)
    default = [{"role": "system", "content": found.group(1)}] if found else []
    if all(_render(tokenizer, p) == _through_ollama(default + p) for p in probes):
        return True, found.group(1) if found else None
    return False, None


def _render(tokenizer: Any, conv: Conversation) -> str:
    return tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)


def _through_ollama(conv: Conversation) -> str:
    """CHATML_TEMPLATE rendered as Ollama renders a template without .Messages (a system message, then user turns
    each with the answer that followed it, ending in a user turn)."""
    system = "\n\n".join(m["content"] for m in conv if m["role"] == "system")
    text = f"{_IM_START}system\n{system}{_IM_END}\n" if system else ""
    for m in conv:
        if m["role"] == "user":
            text += f"{_IM_START}user\n{m['content']}{_IM_END}\n{_IM_START}assistant\n"
        elif m["role"] == "assistant":
            text += f"{m['content']}{_IM_END}\n"
    return text


# --- writing and checking --------------------------------------------------------------------------------


def stop_ids(model: nn.Module, tokenizer: Any) -> list[int]:
    """Where the run's answers end: the model's configured EOS ids, then the tokenizer's."""
    configured = model.generation_config.eos_token_id
    ids = list(configured) if isinstance(configured, list) else [] if configured is None else [configured]
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return list(dict.fromkeys(ids))


def export_gguf(
    model: nn.Module,
    tokenizer: Any,
    folder: Path,
    outtype: str,
    prompts: list[list[int]],
    chat: ChatConfig,
    name: str | None = None,
) -> dict[str, Any]:
    """`folder/model.gguf` and `folder/Modelfile`, then the file loaded back and compared with `model` on the
    prompts (token ids built with the run's chat template). `model`'s weights end rounded as the file stores them."""
    model = model.float().cpu().eval()
    info = write_gguf(model, tokenizer, folder / GGUF_FILE, outtype, name)
    write_modelfile(folder, tokenizer, stop_ids(model, tokenizer), chat)
    checks = _compare(model, folder, outtype, prompts)
    scale = max(1.0, checks.pop("largest_logit"))
    if not math.isfinite(checks["max_abs_diff"]):
        raise TunesmithError(
            f"{outtype.upper()} cannot hold this run's weights (F16 ends at 65504): the file's logits are NaN or "
            "infinite; use --format merged"
        )
    if checks["max_abs_diff_stored"] > STORED_TOLERANCE * scale:
        raise TunesmithError(
            f"the GGUF file's logits differ by {checks['max_abs_diff_stored']:.2e} from the run's own with its weights "
            f"rounded as stored (allowed {STORED_TOLERANCE * scale:.1e}): the file is wrong; use --format merged"
        )
    if outtype == "f16" and checks["max_abs_diff"] > F16_TOLERANCE * scale:
        raise TunesmithError(
            f"F16 weights move this run's logits by {checks['max_abs_diff']:.2e} (allowed {F16_TOLERANCE * scale:.1e}"
            "): its weights do not survive F16; use --format merged"
        )
    if checks["greedy_agreement"] < 1.0:
        log.warning(
            "%s weights change %.0f%% of the greedy answers checked; compare the export's scores before shipping it",
            outtype.upper(),
            100 * (1 - checks["greedy_agreement"]),
        )
    return info | checks


@torch.no_grad()
def _compare(model: nn.Module, folder: Path, outtype: str, prompts: list[list[int]]) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    ref = [_read(model, p) for p in prompts]
    _round_as_stored(model, outtype)
    stored = [_read(model, p)[0] for p in prompts]
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32).eval()
    got = [_read(loaded, p) for p in prompts]
    pairs = list(zip(got, ref, strict=True))
    return {
        "prompts": len(prompts),
        "max_abs_diff": max(float(np.abs(g - r).max()) for (g, _), (r, _) in pairs),
        "max_abs_diff_stored": max(float(np.abs(g - s).max()) for (g, _), s in zip(got, stored, strict=True)),
        "greedy_agreement": sum(g == r for (_, g), (_, r) in pairs) / len(prompts),
        "largest_logit": max(float(np.abs(r).max()) for r, _ in ref),
    }


def _read(model: nn.Module, ids: list[int]) -> tuple[np.ndarray, list[int]]:
    """The logits at every position of the prompt, and the GREEDY_TOKENS tokens greedy decoding adds to it. An
    end-of-answer token does not stop them: a run that answers "" at once still has its next choices compared."""
    out = model(input_ids=torch.tensor([ids]), use_cache=True)
    logits, tokens = out.logits[0].float().numpy(), [int(out.logits[0, -1].argmax())]
    while len(tokens) < GREEDY_TOKENS:
        out = model(input_ids=torch.tensor([tokens[-1:]]), cache=out.cache, use_cache=True)
        tokens.append(int(out.logits[0, -1].argmax()))
    return logits, tokens


def _round_as_stored(model: nn.Module, outtype: str) -> None:
    """Every weight replaced by the value the file holds for it (a row permutation leaves each value as it is)."""
    state = model.state_dict()  # shares storage with the parameters, so a copy_ changes the model
    for hf_name, gguf_name, data in _tensors(model, ARCHITECTURES[type(model).__name__], for_file=False):
        encoded, qtype = _encode(gguf_name, data, outtype)
        values = gguf.quants.dequantize(encoded, qtype).reshape(data.shape)
        state[hf_name].copy_(torch.from_numpy(np.ascontiguousarray(values)))
