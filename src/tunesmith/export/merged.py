"""A run's model as plain weights: any peft adapter folded into the base, ready for from_pretrained."""

from __future__ import annotations

import logging

from torch import nn

from tunesmith.inference import ClassifierRun, GenerativeRun
from tunesmith.models.config import PEFT_METHODS

log = logging.getLogger("tunesmith")


def merged_model(run: ClassifierRun | GenerativeRun, method: str) -> nn.Module:
    model = run.model if isinstance(run, ClassifierRun) else run.lm.model
    if method not in PEFT_METHODS:
        log.info("this run trained every weight: nothing to merge, exporting the model as it is")
        return model
    # merge_and_unload also swaps the trained copy of every module peft kept whole (a classifier's head) into place
    return model.merge_and_unload()
