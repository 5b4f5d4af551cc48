"""The model and method sections of a run's config: which backbone, and what of it trains."""

from __future__ import annotations

from dataclasses import dataclass

from tunesmith.errors import TunesmithError
from tunesmith.fields import check_range, option

METHODS = ("full", "lora", "dora", "rslora", "ia3", "prompt_tuning", "prefix_tuning", "qlora")
PEFT_METHODS = METHODS[1:]
LORA_FAMILY = ("lora", "dora", "rslora", "qlora")  # the methods with a rank and alpha
PROMPT_METHODS = ("prompt_tuning", "prefix_tuning")


@dataclass
class ModelConfig:
    name: str = option("minilm-l6", "model alias, local folder or hub id", flag="model")
    dropout: float | None = option(None, "hidden and attention dropout; default: the model's own")
    freeze_embeddings: bool | None = option(
        None, "freeze the token embeddings; default: on when they hold over two thirds of the weights"
    )
    trust_remote_code: bool = option(False, "run code shipped with a hub model (only for models you trust)")

    def validate(self) -> ModelConfig:
        if not self.name.strip():
            raise TunesmithError("--model is empty; name an alias (`tunesmith models`), a folder or a hub id")
        check_range("dropout", self.dropout, at_least=0, below=1)
        return self


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

    def validate(self) -> MethodConfig:
        check_range("lora-r", self.lora_r, at_least=1, hint="the rank of the LoRA update; 8 or 16 are usual")
        check_range("lora-alpha", self.lora_alpha, above=0)
        check_range("lora-dropout", self.lora_dropout, at_least=0, below=1)
        check_range("num-virtual-tokens", self.num_virtual_tokens, at_least=1)
        if self.lora_target_modules is not None and not all(t.strip() for t in self.lora_target_modules):
            raise TunesmithError("--lora-target names a module; got an empty name")
        return self
