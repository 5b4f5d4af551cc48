"""Cross-validation (`train --cv K`, `recipes.cv.cross_validate`): the folds, the files, the final model, refusals."""

from __future__ import annotations

import copy
import csv
import json
import random
import re
import string
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import FAST, INTENTS, Result, one_error_line, train_args, write_intents
from tunesmith.config import RunConfig
from tunesmith.errors import TunesmithError

CLUSTER = 3  # rows per cluster of near duplicates: a text and two copies with one character changed


# --- data -----------------------------------------------------------------------------------------


def clustered_rows(per_label: int, seed: int = 0) -> list[tuple[str, str, int]]:
    """(text, label, cluster): `per_label` clusters of near duplicates per label, shuffled (built as
    test_prepare's Chinese near duplicates are: one character changed at a third and at two thirds)."""
    rng = random.Random(seed)
    rows = []
    for cluster in range(3 * per_label):
        words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(4, 8))) for _ in range(10)]
        text, label = " ".join(words), "abc"[cluster % 3]
        rows.append((text, label, cluster))
        for at in (len(text) // 3, 2 * len(text) // 3):
            rows.append((text[:at] + ("z" if text[at] != "z" else "y") + text[at + 1 :], label, cluster))
    rng.shuffle(rows)
    return rows


def write_rows(path: Path, rows: list[tuple[str, str, int]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows((text, label) for text, label, _ in rows)
    return path


def small_config(tiny_model: str, train: Path, output: Path) -> RunConfig:
    cfg = RunConfig(output=str(output))
    cfg.data.train = str(train)
    cfg.model.name = tiny_model
    cfg.train.epochs, cfg.train.max_steps, cfg.train.batch_size, cfg.train.lr = 1, 2, 8, 1e-3
    cfg.train.device = "cpu"
    cfg.eval.baseline = False
    return cfg


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


# --- one cross-validation through the Python API, watched from inside ------------------------------


@dataclass
class Watched:
    cfg: RunConfig
    given: RunConfig
    result: dict[str, Any]
    clusters: list[int]  # the cluster of each row of the training file
    calls: list[dict[str, Any]]  # what each run was given: its config, data and save policy
    out: Path


@pytest.fixture(scope="module")
def watched(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watched]:
    """A 3-fold cross-validation without refit on clustered data; every recipe call is recorded."""
    import tunesmith.recipes.cv as cv

    folder = tmp_path_factory.mktemp("cv-api")
    rows = clustered_rows(per_label=12)
    cfg = small_config(tiny_model, write_rows(folder / "clusters.csv", rows), folder / "cv")
    given = copy.deepcopy(cfg)
    calls: list[dict[str, Any]] = []
    real = cv.train_run

    def recorded(run_cfg: RunConfig, **kwargs: Any) -> dict[str, Any]:
        calls.append({"cfg": copy.deepcopy(run_cfg), **kwargs})
        return real(run_cfg, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cv, "train_run", recorded)
        result = cv.cross_validate(cfg, 3, refit=False)
    yield Watched(cfg, given, result, [cluster for _, _, cluster in rows], calls, folder / "cv")


def held_out_rows(out: Path) -> list[list[int]]:
    return [fold["held_out"] for fold in json.loads((out / "folds.json").read_text())["folds"]]


def folds_of_clusters(folds: list[list[int]], clusters: list[int]) -> dict[int, set[int]]:
    """Cluster -> the folds holding its rows (row numbers of the training file)."""
    out: dict[int, set[int]] = {}
    for number, rows in enumerate(folds, 1):
        for row in rows:
            out.setdefault(clusters[row], set()).add(number)
    return out


def test_near_duplicate_clusters_never_span_two_folds(watched: Watched) -> None:
    from tunesmith.data.dedup import group_ids
    from tunesmith.data.prepare import train_folds
    from tunesmith.recipes.classifier import prepare_classifier_data

    train = prepare_classifier_data(watched.cfg).prepared.splits.train
    # Precondition: the detector sees exactly the clusters built (so grouping has something to keep together).
    found = group_ids(train["text"], watched.cfg.data.dedup)
    built = pd.Series([watched.clusters[i] for i in train.index], index=train.index)
    assert found.nunique() == built.nunique() and pd.crosstab(found, built).gt(0).sum(axis=1).eq(1).all()

    spread = folds_of_clusters(held_out_rows(watched.out), watched.clusters)
    assert set(spread) == set(built)  # every cluster of the training split is held out somewhere
    assert all(len(folds) == 1 for folds in spread.values()), spread

    # Without grouping the same split scatters clusters over the folds, so the check above has teeth.
    loose = copy.deepcopy(watched.cfg.data)
    loose.group_split = False
    folds = train_folds(train, loose, 3, watched.cfg.train.seed, stratify=True)
    scattered = folds_of_clusters([train.index[f["validation"]].tolist() for f in folds], watched.clusters)
    assert any(len(folds) > 1 for folds in scattered.values())


def test_folds_are_stratified_by_label(watched: Watched) -> None:
    labels = {row: "abc"[cluster % 3] for row, cluster in enumerate(watched.clusters)}  # as clustered_rows labels
    per_fold = [Counter(labels[row] for row in rows) for rows in held_out_rows(watched.out)]
    for label in "abc":
        counts = [fold[label] for fold in per_fold]
        # Whole clusters move between folds, so one cluster is the finest balance a grouped split can reach.
        assert min(counts) > 0 and max(counts) - min(counts) <= CLUSTER, (label, counts)


def test_each_fold_trains_on_the_other_folds_and_is_scored_on_its_own(watched: Watched) -> None:
    from tunesmith.recipes.classifier import prepare_classifier_data

    whole = prepare_classifier_data(watched.cfg).prepared.splits
    held = held_out_rows(watched.out)
    assert len(watched.calls) == 3  # three fold runs and, without refit, no final run
    for number, call in enumerate(watched.calls, 1):
        splits = call["data"].prepared.splits
        train, test = set(splits.train.index), set(splits.test.index)
        assert not train & test
        assert train | test == set(whole.train.index)
        assert sorted(test) == sorted(held[number - 1])
        pd.testing.assert_frame_equal(splits.validation, whole.validation)  # the best checkpoint's judge
        assert call["save"] == "none" and Path(call["cfg"].output).name == f"fold-{number}"
        metrics = json.loads((watched.out / f"fold-{number}" / "metrics.json").read_text())
        assert metrics["finetuned"]["test"]["n"] == len(test) == watched.result["fold_sizes"][number - 1]
    assert sorted(r for rows in held for r in rows) == sorted(whole.train.index)


def test_the_config_is_left_as_given_and_no_refit_writes_no_final(watched: Watched) -> None:
    from tunesmith.outputs import read_marker

    assert watched.cfg == watched.given
    assert watched.result["final"] is None
    assert entries(watched.out) == ["cv.csv", "cv.json", "fold-1", "fold-2", "fold-3", "folds.json", "tunesmith.json"]
    assert read_marker(watched.out)["kind"] == "cross-validation"
    for number in (1, 2, 3):  # metrics only
        fold = watched.out / f"fold-{number}"
        assert (fold / "metrics.json").is_file() and not (fold / "model").exists()
        assert not (fold / "checkpoints").exists()


def test_an_existing_cross_validation_needs_overwrite_and_its_runs_keep_user_files(watched: Watched) -> None:
    from tunesmith.recipes.cv import cross_validate

    before = (watched.out / "cv.json").read_text()
    with pytest.raises(TunesmithError, match="already exists; pass --overwrite"):
        cross_validate(watched.cfg, 3)
    (watched.out / "fold-1" / "notes.txt").write_text("mine")
    try:
        with pytest.raises(TunesmithError, match=r"fold-1/notes\.txt"):
            cross_validate(watched.cfg, 3, overwrite=True)
    finally:
        (watched.out / "fold-1" / "notes.txt").unlink()
    assert (watched.out / "cv.json").read_text() == before


# --- the command line: a 3-fold run with the final model ---------------------------------------------


def test_three_folds_write_their_runs_summary_and_a_usable_final_model(
    tiny_model: str, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    from tunesmith.inference import load_run, predict_texts

    out = tmp_path / "cv"
    result = cli(*train_args(tiny_model, write_intents(tmp_path / "intents.csv"), str(out), "--cv", "3", *FAST))
    assert result.code == 0, result.err
    assert entries(out) == ["cv.csv", "cv.json", "final", "fold-1", "fold-2", "fold-3", "folds.json", "tunesmith.json"]
    cv = json.loads((out / "cv.json").read_text())
    assert cv["k"] == 3 and cv["seed"] == 42 and sum(cv["fold_sizes"]) == cv["rows"]["train"]

    runs = [json.loads((out / f"fold-{n}" / "metrics.json").read_text())["finetuned"]["test"] for n in (1, 2, 3)]
    assert {"accuracy", "macro_f1", "weighted_f1"} <= set(cv["mean"])
    table = pd.read_csv(out / "cv.csv", dtype={"fold": str}).set_index("fold")
    assert list(table.index) == ["1", "2", "3", "mean", "std"]
    for name in cv["mean"]:
        values = [run[name] for run in runs]  # the fold runs' own numbers
        assert [f["held_out"][name] for f in cv["folds"]] == values
        assert cv["mean"][name] == pytest.approx(np.mean(values))
        assert cv["std"][name] == pytest.approx(np.std(values))
        assert table.loc["mean", name] == pytest.approx(np.mean(values))
        assert table.loc["std", name] == pytest.approx(np.std(values))
        assert list(table.loc[["1", "2", "3"], name]) == pytest.approx(values)

    mean, std = cv["mean"]["accuracy"], cv["std"]["accuracy"]
    assert re.search(rf"^accuracy +{mean:.4f} ± {std:.4f}$", result.out, re.MULTILINE), result.out

    final = out / "final"
    assert (final / "metrics.json").is_file() and (final / "model").is_dir()
    assert cv["final"]["test"]["n"] == cv["rows"]["test"]
    saved = yaml.safe_load((final / "config.yaml").read_text())
    assert saved["output"] == str(out / "final")  # not the staging folder it was trained in
    assert not {"cv", "cv_refit"} & set(saved)  # command flags are never settings
    predictions = predict_texts(load_run(final, device="cpu"), ["where is my parcel", "reset my password"])
    assert all(p["label"] in INTENTS for p in predictions)


# --- refusals: one line, before anything is written --------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--cv", "1"], ["--cv", "at least 2"]),
        (["--cv", "21"], ["--cv 21", "or fewer"]),  # 20 rows a class, some of them in validation and test
        (["--cv", "3", "--task", "sft"], ["--task sft", "yet", "without --cv"]),
        (["--cv", "3", "--resume"], ["--resume", "--cv"]),
        (["--no-cv-refit"], ["--cv K"]),
        (["--cv", "3", "--augment"], ["--augment"]),
    ],
)
def test_refusals_are_one_line_and_write_nothing(
    extra: list[str], needles: list[str], tiny_model: str, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    out = tmp_path / "cv"
    result = cli(*train_args(tiny_model, write_intents(tmp_path / "intents.csv"), str(out), *FAST, *extra))
    one_error_line(result, *needles)
    assert not out.exists()


def test_a_folder_tunesmith_did_not_make_is_refused(
    tiny_model: str, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = cli(*train_args(tiny_model, write_intents(tmp_path / "intents.csv"), str(out), "--cv", "2", "--overwrite"))
    one_error_line(result, "not a folder tunesmith made")
    assert entries(out) == ["notes.txt"]


def test_a_class_whose_rows_are_all_near_duplicates_is_refused(tiny_model: str, tmp_path: Path) -> None:
    """Grouping puts all of class d (one cluster) in one fold: that fold's run could never learn d."""
    from tunesmith.recipes.cv import cross_validate

    lonely = [(text, "d", 99) for text, _, cluster in clustered_rows(per_label=1, seed=5) if cluster == 0]
    cfg = small_config(tiny_model, write_rows(tmp_path / "train.csv", clustered_rows(4) + lonely), tmp_path / "cv")
    cfg.data.validation = str(write_rows(tmp_path / "validation.csv", clustered_rows(per_label=1, seed=1)))
    cfg.data.test = str(write_rows(tmp_path / "test.csv", clustered_rows(per_label=1, seed=2)))
    with pytest.raises(TunesmithError, match=r"every training row of class 'd' falls in fold \d.*--no-group-split"):
        cross_validate(cfg, 3)
    assert not (tmp_path / "cv").exists()
