"""The eval section of a run's config: baselines and generation scoring."""

from __future__ import annotations

from dataclasses import dataclass

from tunesmith.fields import option


@dataclass
class EvalConfig:
    baseline: bool = option(True, "also score the base model (zero-shot and a linear probe) on the test split")
    baseline_max_rows: int = option(4000, "training rows used to fit the linear probe")
    max_new_tokens: int = option(128, "sft/seq2seq: most tokens generated per test example")
    generate_max_rows: int = option(200, "sft/seq2seq: test rows scored by generation (0: all); perplexity uses all")
