"""Backbone + head + method: everything that turns a model folder into what trains."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from tunesmith.config import MethodConfig, ModelConfig
from tunesmith.errors import TunesmithError

log = logging.getLogger("tunesmith")

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
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=cfg.trust_remote_code, **head)
        if cfg.dropout is not None:
            for attr in _DROPOUT_ATTRS:
                if hasattr(config, attr):
                    setattr(config, attr, cfg.dropout)
        if getattr(config, "pad_token_id", None) is None:
            config.pad_token_id = pad_token_id
        return AutoModelForSequenceClassification.from_pretrained(
            path, config=config, trust_remote_code=cfg.trust_remote_code
        )
    except (OSError, ValueError, KeyError) as e:
        raise TunesmithError(f"could not load {path} as a classifier: {_first_line(e)}") from None


def embedding_share(model: nn.Module) -> float:
    total = sum(p.numel() for p in model.parameters())
    return model.get_input_embeddings().weight.numel() / total


def apply_method(model: nn.Module, method: MethodConfig, freeze_embeddings: bool | None) -> nn.Module:
    """Full fine-tuning (optionally with frozen token embeddings) or LoRA through peft."""
    if method.method == "lora":
        return _lora(model, method)
    freeze = embedding_share(model) > 2 / 3 if freeze_embeddings is None else freeze_embeddings
    if freeze:
        model.get_input_embeddings().weight.requires_grad_(False)
    return model


def _lora(model: nn.Module, method: MethodConfig) -> nn.Module:
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=method.lora_r,
        lora_alpha=method.lora_alpha,
        lora_dropout=method.lora_dropout,
        target_modules=method.lora_target_modules,
    )
    try:
        return get_peft_model(model, config)
    except ValueError:
        if method.lora_target_modules:
            raise TunesmithError(
                f"--lora-target {method.lora_target_modules} matches no module of this model; "
                "name linear layers such as query, value or q_proj"
            ) from None
        # peft knows no default for this architecture: adapt every linear layer instead.
        config.target_modules = "all-linear"
        return get_peft_model(model, config)


def trainable_summary(model: nn.Module) -> str:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)"


def load_trained(run_dir: Path, base_path: str, head: dict[str, Any], cfg: ModelConfig, method: str) -> nn.Module:
    """The fine-tuned model of a run folder: a full model, or the base plus its LoRA adapter."""
    model_dir = run_dir / "model"
    if method != "lora":
        return load_classifier(str(model_dir), head, cfg, None)
    from peft import PeftModel

    base = load_classifier(base_path, head, cfg, None)
    return PeftModel.from_pretrained(base, model_dir)
