"""Backbone + head + method: everything that turns a model folder into what trains."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from tunesmith.errors import TunesmithError
from tunesmith.models.config import LORA_FAMILY, PEFT_METHODS, MethodConfig, ModelConfig

log = logging.getLogger("tunesmith")

# The weights a model's checkpoint lacks, which from_pretrained initialised at random (a classifier's
# head, a pooler saved without its weights), recorded on the model by the loaders below. A peft method
# freezes everything it does not know as the head: these must train and be saved with the adapter,
# or every load of the run would draw them anew.
_NEW_WEIGHTS = "tunesmith_new_weights"

# Architectures name their dropout differently; setting every one that exists covers them all.
_DROPOUT_ATTRS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "dropout",
    "attention_dropout",
    "classifier_dropout",
    "hidden_dropout",
    "seq_classif_dropout",
)


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def load_tokenizer(path: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise TunesmithError(f"could not load a tokenizer from {path}: {_first_line(e)}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def load_classifier(path: str, head: dict[str, Any], cfg: ModelConfig, pad_token_id: int | None) -> nn.Module:
    """A sequence-classification model; `head` sets num_labels, problem_type and the label names."""
    from transformers import AutoModelForSequenceClassification

    return _with_head(AutoModelForSequenceClassification, "a classifier", path, head, cfg, pad_token_id)


def load_token_classifier(path: str, head: dict[str, Any], cfg: ModelConfig, pad_token_id: int | None) -> nn.Module:
    """A token-classification model (--task ner); `head` sets the tags."""
    from transformers import AutoModelForTokenClassification

    return _with_head(AutoModelForTokenClassification, "a token classifier", path, head, cfg, pad_token_id)


def _with_head(
    auto: Any, what: str, path: str, head: dict[str, Any], cfg: ModelConfig, pad_token_id: int | None
) -> nn.Module:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=cfg.trust_remote_code, **head)
        _apply_dropout(config, cfg.dropout)
        if getattr(config, "pad_token_id", None) is None:
            config.pad_token_id = pad_token_id
        return _from_pretrained(auto, path, config=config, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        raise TunesmithError(f"could not load {path} as {what}: {_first_line(e)}") from None


def _from_pretrained(auto: Any, path: str, **kwargs: Any) -> nn.Module:
    model, info = auto.from_pretrained(path, output_loading_info=True, **kwargs)
    params = dict(model.named_parameters())
    setattr(model, _NEW_WEIGHTS, sorted(k for k in info["missing_keys"] if k in params))
    return model


def new_weights(model: nn.Module) -> list[str]:
    """The parameters of `model` that its checkpoint did not hold (random at load)."""
    return list(getattr(model, _NEW_WEIGHTS, []))


def _apply_dropout(config: Any, dropout: float | None) -> None:
    if dropout is not None:
        for attr in _DROPOUT_ATTRS:
            if hasattr(config, attr):
                setattr(config, attr, dropout)


def is_decoder_only(config: Any) -> bool:
    """A causal LM's architecture (Llama, Qwen2, GPT-2): its sequence classifier pools the last real token,
    and its base model can be asked in words. BERT and XLM-R have causal-LM heads too, but also masked-LM ones."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = getattr(config, "model_type", None)
    return kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def load_lm(path: str, cfg: ModelConfig, task: str, method: str = "full") -> nn.Module:
    """A causal LM for --task sft (and clm, dpo, orpo), or an encoder-decoder for --task seq2seq.

    For seq2seq, an encoder-only model (BERT, XLM-R) is warm-started into an encoder-decoder, its own
    weights on both sides with new cross-attention: that is how a seq2seq model is built without any
    seq2seq weights (none ship offline).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as e:
        raise TunesmithError(f"could not load {path}: {_first_line(e)}") from None
    architectures = " ".join(config.architectures or [type(config).__name__])
    encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
    causal = any(k in architectures for k in ("CausalLM", "LMHeadModel"))
    seq2seq = task == "seq2seq"
    if not seq2seq and not causal:
        raise TunesmithError(
            f"{path} is not a causal LM ({architectures}), so --task {task} cannot train it to generate; "
            "pick one such as smollm2-135m-instruct (`tunesmith models` lists them)"
            + ("; an encoder adapts to a domain with --task mlm" if task == "clm" else "")
        )
    if seq2seq and not encoder_decoder and causal:
        raise TunesmithError(
            f"{path} is a causal LM ({architectures}); train it with --task sft (a prompt/completion file works), "
            "or give --task seq2seq an encoder-decoder or an encoder to warm-start one"
        )
    _apply_dropout(config, cfg.dropout)
    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
    if method == "qlora":
        kwargs["quantization_config"] = _four_bit()
    try:
        if not seq2seq:
            return _from_pretrained(AutoModelForCausalLM, path, config=config, **kwargs)
        if encoder_decoder:
            return _from_pretrained(AutoModelForSeq2SeqLM, path, config=config, **kwargs)
        if method != "full":
            raise TunesmithError(
                f"--task seq2seq on the encoder {path} builds new cross-attention and an output layer, which must "
                f"train with everything else: use --method full, not --method {method}"
            )
        return _warm_start(path, cfg)
    except (OSError, ValueError, KeyError) as e:
        raise TunesmithError(f"could not load {path} for --task {task}: {_first_line(e)}") from None


def load_masked_lm(path: str, cfg: ModelConfig) -> nn.Module:
    """An encoder with its masked-LM head, for --task mlm. A checkpoint saved without that head (an embedding
    model such as e5) gets a new one; its output layer is still the word embeddings, so most of it is known."""
    from transformers import AutoConfig, AutoModelForMaskedLM

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as e:
        raise TunesmithError(f"could not load {path}: {_first_line(e)}") from None
    if is_decoder_only(config):
        raise TunesmithError(f"{path} is a causal LM: adapt it to a domain with --task clm, not --task mlm")
    _apply_dropout(config, cfg.dropout)
    try:
        model = _from_pretrained(AutoModelForMaskedLM, path, config=config, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        raise TunesmithError(f"could not load {path} for --task mlm: {_first_line(e)}") from None
    new = new_weights(model)
    if new:
        log.warning("%s has no masked-LM head: %s start from random values", path, ", ".join(sorted(new)))
    return model


def load_for_pretraining(path: str, cfg: ModelConfig, task: str, method: str = "full") -> nn.Module:
    """The model --task mlm or clm adapts: an encoder with its masked-LM head, or a causal LM."""
    return load_masked_lm(path, cfg) if task == "mlm" else load_lm(path, cfg, task, method)


def position_limit(model: nn.Module) -> int | None:
    """The longest sequence the model's position embeddings cover; None when they set no limit (T5's relative ones)."""
    config = model.config
    limits = []
    for c in [config, getattr(config, "encoder", None), getattr(config, "decoder", None)]:
        n = getattr(c, "max_position_embeddings", None)
        if isinstance(n, int) and n > 0:
            # RoBERTa-style embeddings number positions from pad_token_id + 1, so two slots are never usable.
            offset = c.pad_token_id + 1 if c.model_type in ("roberta", "xlm-roberta") and c.pad_token_id else 0
            limits.append(n - offset)
    return min(limits) if limits else None


def _warm_start(path: str, cfg: ModelConfig) -> nn.Module:
    from transformers import AutoTokenizer, EncoderDecoderModel

    log.warning("%s is an encoder: warm-starting an encoder-decoder from it (cross-attention starts untrained)", path)
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(path, path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    model.config.decoder_start_token_id = start
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = end
    model.generation_config.decoder_start_token_id = start
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = end
    _apply_dropout(model.config.encoder, cfg.dropout)
    _apply_dropout(model.config.decoder, cfg.dropout)
    return model


def _four_bit() -> Any:
    import torch

    if not torch.cuda.is_available():
        raise TunesmithError("--method qlora loads the base model in 4 bits, which needs a CUDA GPU; use --method lora")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise TunesmithError("--method qlora needs bitsandbytes: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def embedding_share(model: nn.Module) -> float:
    total = sum(p.numel() for p in model.parameters())
    return model.get_input_embeddings().weight.numel() / total


def apply_method(
    model: nn.Module, method: MethodConfig, freeze_embeddings: bool | None, task_type: str = "SEQ_CLS"
) -> nn.Module:
    """Full fine-tuning (optionally with frozen token embeddings), or a peft method wrapping the model.

    task_type is peft's: SEQ_CLS (the head trains too), CAUSAL_LM or SEQ_2_SEQ_LM.
    """
    if method.method in PEFT_METHODS:
        return _peft(model, method, task_type)
    freeze = embedding_share(model) > 2 / 3 if freeze_embeddings is None else freeze_embeddings
    if freeze:
        model.get_input_embeddings().weight.requires_grad_(False)
    return model


def peft_config(method: MethodConfig, task_type: str, targets: Any, modules_to_save: list[str] | None = None) -> Any:
    """peft's config for the method; `modules_to_save` train in full and are saved with the adapter."""
    import peft

    m = method.method
    common = {"task_type": task_type, "modules_to_save": modules_to_save}
    if m in LORA_FAMILY:
        return peft.LoraConfig(
            **common,
            r=method.lora_r,
            lora_alpha=method.lora_alpha,
            lora_dropout=method.lora_dropout,
            target_modules=targets,
            use_dora=m == "dora",
            use_rslora=m == "rslora",
        )
    if m == "ia3":
        # IA3 scales feed-forward inputs, so it must know which targets are feed-forward layers; peft has
        # that per architecture. Given explicit targets, treat none as feed-forward.
        return peft.IA3Config(**common, target_modules=targets, feedforward_modules=[] if targets else None)
    if m == "prompt_tuning":
        return peft.PromptTuningConfig(**common, num_virtual_tokens=method.num_virtual_tokens)
    return peft.PrefixTuningConfig(**common, num_virtual_tokens=method.num_virtual_tokens)


def _new_modules(model: nn.Module, method: str) -> list[str] | None:
    """The modules that own a weight the checkpoint lacks: they train in full beside the adapter."""
    owners = sorted({name.rpartition(".")[0] for name in new_weights(model)})
    if "" in owners:
        raise TunesmithError(
            f"this model has new top-level weights that --method {method} cannot train; use --method full"
        )
    log.debug("new weights, trained in full beside the adapter: %s", owners)
    return owners or None


def _peft(model: nn.Module, method: MethodConfig, task_type: str) -> nn.Module:
    from peft import get_peft_model

    targets: Any = method.lora_target_modules
    if targets == ["all-linear"]:
        targets = "all-linear"
    if method.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    generative = task_type != "SEQ_CLS"
    if targets is None and generative and method.method in LORA_FAMILY:
        targets = "all-linear"  # every linear layer but the output head: the strongest LoRA default for LMs
    new = _new_modules(model, method.method)
    try:
        return get_peft_model(model, peft_config(method, task_type, targets, new))
    except ValueError as e:
        if method.lora_target_modules:
            raise TunesmithError(
                f"--lora-target {method.lora_target_modules} matches no module of this model; "
                "name linear layers such as query, value or q_proj"
            ) from None
        if targets is not None or method.method not in LORA_FAMILY:
            raise TunesmithError(
                f"--method {method.method} does not know this architecture ({_first_line(e)}); "
                "name the layers with --lora-target"
            ) from None
        # peft knows no default for this architecture: adapt every linear layer instead.
        return get_peft_model(model, peft_config(method, task_type, "all-linear", new))


def trainable_summary(model: nn.Module) -> str:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)"


def load_trained(
    model_dir: Path,
    base_path: str,
    head: dict[str, Any],
    cfg: ModelConfig,
    method: str,
    loader: Callable[..., nn.Module] = load_classifier,
    pad_token_id: int | None = None,
) -> nn.Module:
    """The fine-tuned model of a run folder: a full model, or the base plus its peft adapter.

    `loader` is the task's (tasks.TaskInfo.loader): a sequence classifier unless the task says otherwise.
    `pad_token_id` is the run's tokenizer's: a decoder's classifier finds each row's last real token by it, and
    a base model folder may name none."""
    if method not in PEFT_METHODS:
        return loader(str(model_dir), head, cfg, pad_token_id)
    return load_adapter(loader(base_path, head, cfg, pad_token_id), model_dir)


def load_adapter(base: nn.Module, adapter_dir: Path) -> nn.Module:
    """The base model with a run's peft adapter; refused if the base lacks a weight the adapter does not hold."""
    from peft import PeftModel
    from safetensors import safe_open

    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        raise TunesmithError(f"{adapter_dir} has no adapter_model.safetensors: the run did not finish saving")
    with safe_open(str(weights), "pt") as f:
        saved = set(f.keys())
    # peft stores a module it trains in full under the wrapped model's prefix (prompt methods: one level less).
    lacking = [k for k in new_weights(base) if not {f"base_model.model.{k}", f"base_model.{k}"} & saved]
    if lacking:
        raise TunesmithError(
            f"{adapter_dir} lacks {', '.join(lacking[:3])}{' ...' if len(lacking) > 3 else ''}, which the base "
            f"model {base.name_or_path} does not hold either, so each load would draw them at random; "
            "train this run again (tunesmith now trains and saves them with the adapter)"
        )
    return PeftModel.from_pretrained(base, adapter_dir)
