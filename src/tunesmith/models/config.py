"""The model and method sections of a run's config: which backbone, and what of it trains."""

from __future__ import annotations

from dataclasses import dataclass

from tunesmith.fields import option

METHODS = ("full", "lora", "dora", "rslora", "ia3", "prompt_tuning", "prefix_tuning", "qlora")


@dataclass
class ModelConfig:
    name: str = option("minilm-l6", "model alias, local folder or hub id", flag="model")
    dropout: float | None = option(None, "hidden and attention dropout; default: the model's own")
    freeze_embeddings: bool | None = option(
        None, "freeze the token embeddings; default: on when they hold over two thirds of the weights"
    )
    trust_remote_code: bool = option(False, "run code shipped with a hub model (only for models you trust)")


@dataclass
class MethodConfig:
    method: str = option(
        "full",
        "what trains: all weights, or a peft method (LoRA, DoRA, rsLoRA, IA3, prompt or prefix tuning; "
        "qlora: LoRA on a 4-bit base, CUDA only); classifiers also train their head",
        choices=METHODS,
    )
    lora_r: int = option(8, "LoRA rank")
    lora_alpha: int = option(16, "LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = option(0.1, "dropout on the LoRA input")
    lora_target_modules: list[str] | None = option(
        None,
        "module names to adapt (or all-linear); default: every linear layer of a generative model, "
        "peft's choice for the architecture otherwise",
        flag="lora-target",
    )
    num_virtual_tokens: int = option(20, "prompt and prefix tuning: number of trained virtual tokens")
