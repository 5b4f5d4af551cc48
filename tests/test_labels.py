"""Label tools: merging look-alike labels, class weights, and rare classes kept in train."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest
import torch

from tunesmith.config import RunConfig
from tunesmith.data.dataset import load_file, lookalike_labels
from tunesmith.data.split import holdout
from tunesmith.errors import TunesmithError
from tunesmith.tasks.classification import Classification


def _write(path: Path, rows: list[tuple[str, str]]) -> Path:
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
    return path


def test_lookalike_labels_are_found_most_frequent_first() -> None:
    labels = pd.Series(["refund", "Refund", "refund", "REFUND", "account", "shipping", "Shipping "])
    groups = lookalike_labels(labels)
    assert ["refund", "Refund", "REFUND"] in groups
    assert any(set(g) == {"shipping", "Shipping "} for g in groups)
    assert not any("account" in g for g in groups)


def test_reading_warns_about_lookalikes_with_the_merge_command(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write(tmp_path / "d.csv", [("a", "refund"), ("b", "refund"), ("c", "Refund"), ("d", "account")])
    with caplog.at_level(logging.WARNING, logger="tunesmith"):
        load_file(str(path), RunConfig().data, multilabel=False)
    assert "look like one label" in caplog.text
    assert "--label-map 'Refund=refund'" in caplog.text


def test_label_map_merges_and_renames(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _write(tmp_path / "d.csv", [("a", "refund"), ("b", "Refund"), ("c", "acct")])
    cfg = RunConfig().data
    cfg.label_map = ["Refund=refund", "acct=account"]
    with caplog.at_level(logging.WARNING, logger="tunesmith"):
        frame = load_file(str(path), cfg, multilabel=False)
    assert frame["label"].tolist() == ["refund", "refund", "account"]
    assert "look like one label" not in caplog.text


def test_label_map_applies_inside_multilabel_cells(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", [("a", "Refund|refund|account"), ("b", "acct")])
    cfg = RunConfig(task="multilabel").data
    cfg.label_map = ["Refund=refund", "acct=account"]
    frame = load_file(str(path), cfg, multilabel=True)
    assert frame["label"].tolist() == [("refund", "account"), ("account",)]


@pytest.mark.parametrize("bad", ["refund", "a=b=c", "=x", "x="])
def test_malformed_label_map_is_one_clear_error(bad: str) -> None:
    cfg = RunConfig(output="x")
    cfg.data.train = "t.csv"
    cfg.data.label_map = [bad]
    with pytest.raises(TunesmithError, match="is not OLD=NEW"):
        cfg.validate()


def test_class_weights_only_for_classification() -> None:
    cfg = RunConfig(task="regression", output="x")
    cfg.data.train = "t.csv"
    cfg.train.class_weights = "balanced"
    with pytest.raises(TunesmithError, match="applies to classification"):
        cfg.validate()


def test_balanced_weights_equalise_the_classes_share_of_the_loss() -> None:
    train = pd.DataFrame({"text": list("abcdef"), "label": ["a", "a", "a", "a", "b", "b"]})
    task = Classification()
    task.fit(train, "t.csv")
    task.balance(train)
    weights = task.class_weights
    assert weights is not None
    counts = torch.tensor([4.0, 2.0])
    assert torch.allclose(weights, 6 / (2 * counts))
    # Each class then carries the same total weight, whatever its size.
    assert torch.allclose(weights * counts, torch.full((2,), 3.0))


def test_weighted_loss_counts_a_rare_class_example_more() -> None:
    task = Classification(["a", "b"])
    logits = torch.tensor([[0.0, 0.0], [0.0, 0.0]])

    class Fixed(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> object:
            return type("Out", (), {"logits": logits})()

    batch = {"input_ids": torch.zeros(2, 1), "attention_mask": torch.ones(2, 1), "labels": torch.tensor([0, 1])}
    plain, n = task.loss(Fixed(), batch)
    task.class_weights = torch.tensor([1.0, 3.0])
    weighted, _ = task.loss(Fixed(), batch)
    assert n == 2
    assert torch.isclose(weighted, plain * 2)  # (1 + 3) / (1 + 1): the rare example counts three times


def test_single_row_class_stays_in_train(caplog: pytest.LogCaptureFixture) -> None:
    df = pd.DataFrame({"text": [f"t{i}" for i in range(41)], "label": ["a"] * 20 + ["b"] * 20 + ["rare"]})
    with caplog.at_level(logging.WARNING, logger="tunesmith"):
        kept, held = holdout(df, 0.25, seed=0, name="test", stratify=True)
    assert "rare" in kept["label"].tolist() and "rare" not in held["label"].tolist()
    assert len(kept) + len(held) == len(df)
    assert "single row stay in train" in caplog.text


def test_a_numeric_text_column_is_named_aloud(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "d.csv"
    pd.DataFrame({"id": [1, 2, 3], "text": ["a", "b", "c"], "label": ["x", "y", "x"]}).to_csv(path, index=False)
    cfg = RunConfig().data
    cfg.text_columns = ["id"]
    with caplog.at_level(logging.WARNING, logger="tunesmith"):
        frame = load_file(str(path), cfg, multilabel=False)
    assert "text column 'id' holds only numbers" in caplog.text
    assert frame["text"].tolist() == ["1", "2", "3"]  # still read, as text: the warning is the point


def test_label_map_matches_integer_labels_read_as_floats(tmp_path: Path) -> None:
    """A bug compared "1.0" with "1": a numeric label column with a gap ignored --label-map."""
    path = tmp_path / "d.csv"
    pd.DataFrame({"text": ["a", "b", "c", "d"], "label": [1, None, 2, 1]}).to_csv(path, index=False)
    cfg = RunConfig().data
    cfg.label_map = ["1=pos", "2=neg"]
    frame = load_file(str(path), cfg, multilabel=False)
    assert frame["label"].tolist() == ["pos", "neg", "pos"]


def test_leak_check_error_holds_when_dedup_is_on(tmp_path: Path) -> None:
    """A bug let --dedup quietly drop the leaking training rows even under --leak-check error."""
    from tunesmith.data.prepare import prepare_data

    train = _write(tmp_path / "train.csv", [(f"text {i}", "a" if i % 2 else "b") for i in range(20)])
    test = _write(tmp_path / "test.csv", [("text 3", "a"), ("fresh text", "b")])
    validation = _write(tmp_path / "validation.csv", [("other text", "a"), ("more text", "b")])
    cfg = RunConfig().data
    cfg.train, cfg.validation, cfg.test = str(train), str(validation), str(test)
    cfg.dedup.enabled = True
    cfg.leak_check = "error"
    with pytest.raises(TunesmithError, match="also appear in train"):
        prepare_data(cfg, "classification", seed=0)
    cfg.leak_check = "warn"
    prepared = prepare_data(cfg, "classification", seed=0)
    assert "text 3" not in prepared.splits.train["text"].tolist()  # dropped from train, recorded
    assert "leak check" in prepared.removed["step"].tolist()
