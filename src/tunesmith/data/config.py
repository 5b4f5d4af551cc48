"""The data section of a run's config: files, columns, splits, and the cleaning, dedup, augmentation and chat steps."""

from __future__ import annotations

from dataclasses import dataclass, field

from tunesmith.data.augment import AugmentConfig
from tunesmith.data.chat import ChatConfig
from tunesmith.data.clean import CleanConfig
from tunesmith.data.dedup import DedupConfig
from tunesmith.errors import TunesmithError
from tunesmith.fields import check_range, option


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

    def validate(self, task: str, generative: bool) -> DataConfig:
        if not self.train:
            raise TunesmithError("no training data: pass --train FILE (or data.train in the YAML)")
        if not generative:
            if not self.text_columns or not self.label_columns:
                raise TunesmithError("--text-column and --label-column need at least one column each")
            if task != "multilabel" and len(self.label_columns) != 1:
                raise TunesmithError(f"--task {task} takes one --label-column, got {self.label_columns}")
        for name, value, given in (
            ("validation", self.validation_size, self.validation),
            ("test", self.test_size, self.test),
        ):
            if not given and not 0 < value < 0.5:
                raise TunesmithError(f"--{name}-size must be in (0, 0.5) when no --{name} file is given, got {value}")
        check_range("max-length", self.max_length, at_least=1)
        check_range("max-train-rows", self.max_train_rows, at_least=0, hint="0 keeps every row")
        if self.folds == 1 or self.folds < 0:
            raise TunesmithError(f"--folds must be 0 (none) or at least 2, got {self.folds}")
        bad_map = [m for m in self.label_map if m.count("=") != 1 or not all(p.strip() for p in m.split("="))]
        if bad_map:
            raise TunesmithError(f"--label-map {bad_map[0]!r} is not OLD=NEW")
        if self.dedup.enabled or self.group_split or self.leak_check != "off":
            self.dedup.validate()  # its threshold and n-grams also drive grouping and the leak check
        if self.augment.enabled:
            self.augment.validate()
        if self.clean.enabled:
            self.clean.validate()
        if generative:
            self.chat.validate()
        return self
