"""The eval section of a run's config: baselines and generation scoring."""

from __future__ import annotations

from dataclasses import dataclass

from tunesmith.fields import check_range, option

MAX_NEW_TOKENS = 4096  # a bound on one answer, so a typo cannot generate for hours


@dataclass
class EvalConfig:
    baseline: bool = option(True, "also score the base model (zero-shot and a linear probe) on the test split")
    baseline_max_rows: int = option(4000, "training rows used to fit the linear probe")
    max_new_tokens: int = option(128, "sft/seq2seq: most tokens generated per test example")
    generate_max_rows: int = option(200, "sft/seq2seq: test rows scored by generation (0: all); perplexity uses all")

    def validate(self) -> EvalConfig:
        check_range("baseline-max-rows", self.baseline_max_rows, at_least=2)
        check_range("max-new-tokens", self.max_new_tokens, at_least=1, at_most=MAX_NEW_TOKENS)
        check_range("generate-max-rows", self.generate_max_rows, at_least=0, hint="0 generates for every test row")
        return self
