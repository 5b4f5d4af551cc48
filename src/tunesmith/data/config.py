"""The data section of a run's config: files, columns, splits, and the cleaning, dedup, augmentation and chat steps."""

from __future__ import annotations

from dataclasses import dataclass, field

from tunesmith.data.augment import AugmentConfig
from tunesmith.data.chat import ChatConfig
from tunesmith.data.clean import CleanConfig
from tunesmith.data.dedup import DedupConfig
from tunesmith.fields import option


@dataclass
class DataConfig:
    train: str | None = option(None, "training file (csv, tsv, json, jsonl, parquet)")
    validation: str | None = option(None, "validation file; split from --train when absent")
    test: str | None = option(None, "test file; split from --train when absent")
    text_columns: list[str] = option(
        ["text"], "text column; repeat for several (joined with a newline)", flag="text-column"
    )
    label_columns: list[str] = option(
        ["label"],
        "label column; for multilabel repeat it for 0/1 columns or give one column of separated labels",
        flag="label-column",
    )
    label_separator: str = option("|", "separator of labels inside one multilabel cell")
    label_map: list[str] = option([], "rename or merge labels as OLD=NEW; repeat for several", flag="label-map")
    encoding: str | None = option(None, "file encoding when not UTF-8, e.g. gb18030")
    validation_size: float = option(0.1, "fraction held out for validation when no --validation file")
    test_size: float = option(0.1, "fraction held out for test when no --test file")
    max_length: int | None = option(
        None, "maximum tokens per example; longer ones are truncated (default: 128, or 1024 for sft and seq2seq)"
    )
    max_train_rows: int = option(0, "use at most this many training rows after the split (0: all)")
    leak_check: str = option(
        "warn",
        "texts of validation/test that are also in train (exact or near): warn, stop with an error, or skip",
        choices=("warn", "error", "off"),
    )
    group_split: bool = option(
        True, "keep near-duplicate texts together in one split when splitting (threshold: --dedup-threshold)"
    )
    folds: int = option(0, "data prepare: also write K cross-validation folds of train to folds.json (0: none)")
    clean: CleanConfig = field(default_factory=CleanConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    chat: ChatConfig = field(default_factory=ChatConfig)
