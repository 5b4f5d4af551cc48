"""The data pipeline and the splits: holdout/kfold, prepare_data, write_prepared, inspect, and `tunesmith data`.

The clean/dedup/augment steps have their own unit tests; here they run as steps of the pipeline, and what
is checked is what a user relies on: no text of validation/test in train, every dropped row accounted for
with its line and reason, seeded splits, and files that `tunesmith train` reads back.
"""

from __future__ import annotations

import csv
import json
import logging
import random
import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from conftest import INTENTS, write_intents
from tunesmith.config import DataConfig, RunConfig
from tunesmith.data import split
from tunesmith.data.dedup import group_ids, normalise_key
from tunesmith.data.prepare import prepare_data, write_prepared
from tunesmith.data.report import inspect_data, render_text, script_of
from tunesmith.data.split import holdout, kfold
from tunesmith.errors import TunesmithError

SPLITS = ("train", "validation", "test")


def write_csv(path: Path, rows: list[tuple[object, ...]], header: tuple[str, ...] = ("text", "label")) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, dtype=str)


def labelled(sizes: dict[str, int], start: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Unique texts with class sizes `sizes`, shuffled, on an index that is not 0..n-1."""
    rows = [(f"{label} example {i}", label) for label, n in sizes.items() for i in range(n)]
    random.Random(seed).shuffle(rows)
    df = pd.DataFrame(rows, columns=["text", "label"])
    df.index = pd.RangeIndex(start, start + 3 * len(df), 3)
    return df


def grouped(n_groups: int, size: int, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """`n_groups` groups of `size` rows; a group's rows share a label (as near duplicates usually do)."""
    rows = [(f"text {g}.{j}", "abc"[g % 3], g) for g in range(n_groups) for j in range(size)]
    random.Random(seed).shuffle(rows)
    df = pd.DataFrame(rows, columns=["text", "label", "group"])
    df.index = pd.RangeIndex(500, 500 + len(df))
    return df[["text", "label"]], df["group"]


def keys(frame: pd.DataFrame) -> set[str]:
    return set(frame["text"].map(normalise_key))


def sizes(prepared) -> dict[str, int]:
    return {name: len(getattr(prepared.splits, name)) for name in SPLITS}


def forbid(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make split.<name> fail when used, so a test proves which scikit-learn path a split took."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"{name} should not be used here")

    monkeypatch.setattr(split, name, refuse)


# --- holdout --------------------------------------------------------------------------------------


def test_holdout_is_stratified_and_keeps_the_original_index_and_rows() -> None:
    df = labelled({"a": 30, "b": 20, "c": 10})
    kept, held = holdout(df, 0.2, seed=0, name="test", stratify=True)
    assert len(held) == 12 and len(kept) == 48
    counts = held["label"].value_counts()
    for label, n in {"a": 30, "b": 20, "c": 10}.items():
        assert abs(counts[label] - n * 0.2) <= 1, counts
    assert set(kept.index).isdisjoint(held.index)
    assert sorted([*kept.index, *held.index]) == list(df.index)
    # Index labels still point at the same rows.
    pd.testing.assert_frame_equal(pd.concat([kept, held]).sort_index(), df.sort_index())


def test_holdout_is_seeded() -> None:
    df = labelled({"a": 30, "b": 30})
    first = holdout(df, 0.2, seed=7, name="test", stratify=True)[1].index
    assert list(holdout(df, 0.2, seed=7, name="test", stratify=True)[1].index) == list(first)
    assert set(holdout(df, 0.2, seed=8, name="test", stratify=True)[1].index) != set(first)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_holdout_keeps_groups_whole_via_stratified_group_kfold(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    df, groups = grouped(n_groups=30, size=2)  # 30 groups >= 2 * round(1 / 0.2): the stratified grouped path
    forbid(monkeypatch, "GroupShuffleSplit")
    kept, held = holdout(df, 0.2, seed=seed, name="test", stratify=True, groups=groups)
    assert set(groups[kept.index]).isdisjoint(groups[held.index])
    assert len(kept) + len(held) == len(df) and 6 <= len(held) <= 18
    assert set(held["label"]) == {"a", "b", "c"}  # still stratified


@pytest.mark.parametrize("stratify", [True, False])
def test_holdout_keeps_groups_whole_via_group_shuffle_split(monkeypatch: pytest.MonkeyPatch, stratify: bool) -> None:
    df, groups = grouped(n_groups=6, size=10)  # too few groups to stratify: GroupShuffleSplit
    forbid(monkeypatch, "StratifiedGroupKFold")
    kept, held = holdout(df, 0.2, seed=3, name="validation", stratify=stratify, groups=groups)
    assert set(groups[kept.index]).isdisjoint(groups[held.index])
    assert len(kept) + len(held) == len(df) and len(held) > 0 and len(kept) > 0
    assert list(holdout(df, 0.2, seed=3, name="validation", stratify=stratify, groups=groups)[1].index) == list(
        held.index
    )


def test_holdout_with_too_few_rows_is_a_clear_error() -> None:
    df = labelled({"a": 2, "b": 2})
    with pytest.raises(TunesmithError, match=r"too few rows \(4\).*test split of 10%.*--test FILE"):
        holdout(df, 0.1, seed=0, name="test", stratify=True)
    with pytest.raises(TunesmithError, match="too few rows"):
        holdout(df.iloc[:1], 0.5, seed=0, name="validation", stratify=False)


def test_holdout_with_one_group_is_a_clear_error() -> None:
    """All rows near duplicates of each other: no grouped split exists, and the user must be told so.

    BUG: GroupShuffleSplit raises scikit-learn's ValueError ("the resulting train set will be empty"),
    which `tunesmith` shows as a traceback instead of one error line.
    """
    df = labelled({"a": 5, "b": 5})
    one_group = pd.Series(0, index=df.index)
    for stratify in (True, False):
        with pytest.raises(TunesmithError, match="cannot form a test split"):
            holdout(df, 0.2, seed=0, name="test", stratify=stratify, groups=one_group)


# --- kfold ----------------------------------------------------------------------------------------


def test_kfold_validates_every_row_exactly_once_by_index_label() -> None:
    df = labelled({"a": 12, "b": 8, "c": 5})
    folds = kfold(df, 5, seed=0)
    assert len(folds) == 5
    validated = [i for _, va in folds for i in va]
    assert sorted(validated) == list(df.index)  # index labels, each once
    for tr, va in folds:
        assert set(tr).isdisjoint(va) and sorted([*tr, *va]) == list(df.index)
    assert [list(va) for _, va in kfold(df, 5, seed=0)] == [list(va) for _, va in folds]


def test_kfold_is_stratified() -> None:
    df = labelled({"a": 20, "b": 10, "c": 5})
    for _, va in kfold(df, 5, seed=1):
        counts = df.loc[va, "label"].value_counts()
        for label, n in {"a": 20, "b": 10, "c": 5}.items():
            assert abs(counts.get(label, 0) - n / 5) <= 1, counts


@pytest.mark.parametrize("stratify", [True, False])  # StratifiedGroupKFold, and the seeded round-robin
def test_kfold_keeps_each_group_in_one_fold(stratify: bool) -> None:
    df, groups = grouped(n_groups=15, size=3)
    folds = kfold(df, 3, seed=0, stratify=stratify, groups=groups)
    assert sorted(i for _, va in folds for i in va) == list(df.index)
    fold_of: dict[int, set[int]] = {}
    for number, (_, va) in enumerate(folds):
        assert len(va) > 0
        for g in groups[va]:
            fold_of.setdefault(g, set()).add(number)
    assert all(len(f) == 1 for f in fold_of.values()), fold_of
    assert len(fold_of) == 15


@pytest.mark.parametrize("k", [0, 1, 11])
def test_kfold_rejects_a_bad_k(k: int) -> None:
    df = labelled({"a": 5, "b": 5})
    with pytest.raises(TunesmithError, match=rf"2 <= k <= rows \(10\), got k={k}"):
        kfold(df, k, seed=0)


@pytest.mark.parametrize("stratify", [True, False])
def test_kfold_with_fewer_groups_than_folds_is_a_clear_error(stratify: bool) -> None:
    """BUG: 2 groups and k=3 give scikit-learn's ValueError (stratified) or an empty validation fold (not)."""
    df, groups = grouped(n_groups=2, size=5)
    with pytest.raises(TunesmithError, match="group"):
        kfold(df, 3, seed=0, stratify=stratify, groups=groups)


# --- prepare_data ---------------------------------------------------------------------------------


@pytest.fixture
def repeated(tmp_path: Path) -> Path:
    """60 rows with 38 distinct texts: a plain random split leaks."""
    path = write_intents(tmp_path / "intents.csv")
    texts = read_csv(path)["text"]
    assert texts.duplicated().sum() > 10
    return path


def test_group_split_keeps_every_text_of_validation_and_test_out_of_train(repeated: Path) -> None:
    prepared = prepare_data(DataConfig(train=str(repeated)), "classification", seed=42)
    s = prepared.splits
    assert sum(sizes(prepared).values()) == 60 and prepared.removed.empty  # nothing dropped, only grouped
    assert keys(s.train).isdisjoint(keys(s.validation) | keys(s.test))
    assert keys(s.validation).isdisjoint(keys(s.test))
    assert len(s.validation) > 0 and len(s.test) > 0
    assert next(step for step in prepared.steps if step["step"] == "leak check")["leaking_rows"] == 0


def test_ungrouped_split_leaks_and_leak_check_error_stops(repeated: Path) -> None:
    cfg = DataConfig(train=str(repeated), group_split=False, leak_check="error")
    with pytest.raises(TunesmithError) as err:
        prepare_data(cfg, "classification", seed=42)
    message = str(err.value)
    assert "also appear in train" in message and "--dedup" in message
    assert "train line " in message and ("validation line " in message or "test line " in message)


def test_leak_check_warn_logs_and_keeps_the_rows(repeated: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tunesmith")
    prepared = prepare_data(DataConfig(train=str(repeated), group_split=False), "classification", seed=42)
    s = prepared.splits
    leaked = keys(s.train) & (keys(s.validation) | keys(s.test))
    assert leaked, "an ungrouped split of this data should leak"
    warning = next(r.getMessage() for r in caplog.records if "also appear in train" in r.getMessage())
    assert "--dedup" in warning and "line " in warning
    assert sum(sizes(prepared).values()) == 60 and prepared.removed.empty
    step = next(step for step in prepared.steps if step["step"] == "leak check")
    assert step["leaking_rows"] >= len(leaked)


def test_leak_check_off_says_nothing(repeated: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tunesmith")
    prepare_data(DataConfig(train=str(repeated), group_split=False, leak_check="off"), "classification", seed=42)
    assert not [r for r in caplog.records if "also appear in train" in r.getMessage()]


def removed_lines_and_kept_lines(prepared) -> tuple[list[str], list[str]]:
    kept = [f"line {i + 2}" for name in SPLITS for i in getattr(prepared.splits, name).index]
    return list(prepared.removed["line"]), kept


def test_dedup_removes_duplicates_and_records_every_dropped_row(repeated: Path) -> None:
    cfg = DataConfig(train=str(repeated))
    cfg.dedup.enabled = True
    prepared = prepare_data(cfg, "classification", seed=42)
    s = prepared.splits
    everything = pd.concat([s.train, s.validation, s.test])
    assert not everything["text"].map(normalise_key).duplicated().any()
    assert not s.train["text"].map(normalise_key).duplicated().any()
    removed = prepared.removed
    assert len(removed) >= 60 - 38  # at least the exact repeats
    for column in ("source", "line", "step", "reason", "text", "label"):
        assert removed[column].notna().all(), column
    assert set(removed["source"]) == {str(repeated)}
    assert set(removed["step"]) == {"dedup"}
    # Reasons name the kept row by its line in the user's file, as the `line` column does.
    assert removed["reason"].str.contains(r"duplicate of line \d+").all()
    # Nothing lost silently: each input line is either in a split or in `removed`, never both.
    gone, kept = removed_lines_and_kept_lines(prepared)
    assert len(gone) + len(kept) == 60
    assert sorted(gone + kept) == sorted(f"line {i}" for i in range(2, 62))
    # A removed row's text is the text on that line of the file.
    raw = read_csv(repeated)
    for line, text in zip(removed["line"], removed["text"], strict=True):
        assert raw.at[int(line.split()[1]) - 2, "text"] == text
    assert prepared.manifest()["removed"] == len(removed)


def test_clean_drops_an_html_only_row_and_records_it(tmp_path: Path) -> None:
    rows = read_csv(write_intents(tmp_path / "base.csv")).values.tolist()
    rows[5] = ["<p><br/></p>", "refund"]  # line 7: nothing left once tags are gone
    rows[9] = ["", "account"]  # line 11: empty from the start
    rows[12] = ["<b>reset</b> my password", "account"]  # line 14: cleaned, kept
    path = write_csv(tmp_path / "dirty.csv", [tuple(r) for r in rows])
    cfg = DataConfig(train=str(path))
    cfg.clean.enabled = True
    prepared = prepare_data(cfg, "classification", seed=0)
    removed = prepared.removed.set_index("line")
    assert removed.loc["line 7", "step"] == "clean"
    assert removed.loc["line 7", "reason"] == "empty after cleaning"
    assert removed.loc["line 7", "text"] == "<p><br/></p>"  # the text as the user wrote it
    assert removed.loc["line 11", "step"] == "read"
    everything = pd.concat([getattr(prepared.splits, name) for name in SPLITS])
    assert everything.at[12, "text"] == "reset my password"
    assert not everything["text"].str.contains("<").any()
    gone, kept = removed_lines_and_kept_lines(prepared)
    assert sorted(gone + kept) == sorted(f"line {i}" for i in range(2, 62))
    clean_step = next(step for step in prepared.steps if step["step"] == "clean train")
    assert clean_step["dropped_empty"] == 1


def test_augment_adds_rows_to_train_only(repeated: Path) -> None:
    def run(augment: bool):
        cfg = DataConfig(train=str(repeated))
        cfg.augment.enabled = augment
        cfg.augment.synonym = cfg.augment.insert = 0.0  # swap and delete: no WordNet needed
        return prepare_data(cfg, "classification", seed=5)

    plain, augmented = run(False), run(True)
    for name in ("validation", "test"):
        pd.testing.assert_frame_equal(getattr(augmented.splits, name), getattr(plain.splits, name))
    before, after = plain.splits.train, augmented.splits.train
    assert len(after) > len(before)
    pd.testing.assert_frame_equal(after.loc[before.index], before)  # originals untouched
    added = after.drop(index=before.index)
    assert list(after.columns) == ["text", "label"]
    assert set(added["text"]).isdisjoint(before["text"])
    assert set(added["label"]) <= set(INTENTS)
    assert after.index.is_unique
    step = next(step for step in augmented.steps if step["step"] == "augment train")
    assert step["added"] == len(added) and step["synonym"] == step["insert"] == 0


def test_separate_files_sharing_a_text_with_train_lose_the_train_copy(tmp_path: Path) -> None:
    train = write_intents(tmp_path / "train.csv")
    raw = read_csv(train)
    shared = raw["text"].value_counts().index[0]  # a text train repeats
    label = raw.loc[raw["text"] == shared, "label"].iloc[0]
    validation = write_csv(
        tmp_path / "validation.csv", [("my invoice shows the wrong amount", "refund"), (shared, label)]
    )
    test = write_csv(tmp_path / "test.csv", [(shared.upper() + "!", label), ("how do I log out", "account")])
    cfg = DataConfig(train=str(train), validation=str(validation), test=str(test))
    cfg.dedup.enabled = True
    prepared = prepare_data(cfg, "classification", seed=0)
    s = prepared.splits
    assert normalise_key(shared) not in keys(s.train)
    assert keys(s.train).isdisjoint(keys(s.validation) | keys(s.test))
    assert sizes(prepared)["validation"] == 2 and sizes(prepared)["test"] == 2  # theirs are kept
    leak_rows = prepared.removed[prepared.removed["step"] == "leak check"]
    assert len(leak_rows) == 1
    row = leak_rows.iloc[0]
    assert row["source"] == str(train) and row["text"] == shared
    assert row["reason"] == "also in validation or test" and row["line"].startswith("line ")
    assert len(prepared.removed) + len(s.train) == 60  # every train row kept or accounted for


def test_separate_files_sharing_a_text_without_dedup_name_the_lines(tmp_path: Path) -> None:
    train = write_intents(tmp_path / "train.csv")
    shared = read_csv(train)["text"].iloc[3]  # line 5
    validation = write_csv(tmp_path / "validation.csv", [("a brand new question", "refund"), (shared, "refund")])
    test = write_csv(tmp_path / "test.csv", [("how do I log out", "account")])
    cfg = DataConfig(train=str(train), validation=str(validation), test=str(test), leak_check="error")
    with pytest.raises(TunesmithError, match=r"validation line 3 ~ train line \d+"):
        prepare_data(cfg, "classification", seed=0)


ZH = [
    ("我上周在你们网站买的洗衣机到现在还没有送到，物流信息也一直没有更新，麻烦帮我查一下是什么情况。", "物流"),
    ("我想申请退款，因为收到的衣服尺码不对，而且颜色和图片上的差别很大，真的非常失望，希望尽快处理。", "退款"),
    ("我的账号昨天晚上突然登录不上了，一直提示密码错误，可是我根本没有改过密码，是不是被盗号了。", "账号"),
    ("快递员把包裹放在了小区门口就直接走了，等我下班回来的时候东西已经不见了，这个责任应该谁来负。", "物流"),
    ("上个月退回去的商品你们仓库已经签收了，但是退款到现在还没有到我的银行卡里，请问还要等多久。", "退款"),
    ("我想知道怎么修改绑定的手机号码，原来的号码已经停用很久了，现在登录的时候收不到任何验证码。", "账号"),
    ("我在下单的时候把收货地址填错了，包裹已经发出来了，能不能联系快递帮我改成公司的地址，谢谢。", "物流"),
    ("收到的蓝牙耳机左边完全没有声音，换了好几个手机试过都一样，应该是出厂的时候就坏了，我要退货。", "退款"),
    ("你们的会员积分为什么突然清零了，我记得上个月还有三千多分，账户里也没有任何兑换记录可以查。", "账号"),
    ("大件家具的送货师傅说只能放在一楼，不肯搬上楼，可是下单页面上明明写着送货上门包安装的服务。", "物流"),
    ("这款电饭煲用了不到一个星期内胆的涂层就开始掉了，煮出来的米饭里面都是黑色的碎片，申请退款。", "退款"),
    ("我的账号被别人在另外一个城市登录了，还用我的余额买了很多东西，请马上帮我冻结账户并且追回。", "账号"),
]


def zh_rows() -> list[tuple[str, str, int]]:
    """Each sentence three times: as written, and twice with one character changed (near duplicates)."""
    rows = []
    for group, (text, label) in enumerate(ZH):
        rows.append((text, label, group))
        for at, char in ((len(text) // 3, "很"), (2 * len(text) // 3, "啊")):
            rows.append((text[:at] + char + text[at + 1 :], label, group))
    random.Random(0).shuffle(rows)
    return rows


def test_chinese_near_duplicates_stay_in_one_split(tmp_path: Path) -> None:
    rows = zh_rows()
    path = write_csv(tmp_path / "zh.csv", [(text, label) for text, label, _ in rows])
    base = [group for _, _, group in rows]
    cfg = DataConfig(train=str(path), validation_size=0.2, test_size=0.2)
    # Precondition: the detector sees exactly the constructed groups (one character changed, not one text).
    found = group_ids(read_csv(path)["text"], cfg.dedup)
    assert found.nunique() == len(ZH) and pd.crosstab(found, pd.Series(base)).gt(0).sum(axis=1).eq(1).all()
    prepared = prepare_data(cfg, "classification", seed=0)
    split_of = {i: name for name in SPLITS for i in getattr(prepared.splits, name).index}
    assert len(split_of) == len(rows)
    for group in range(len(ZH)):
        where = {split_of[i] for i, g in enumerate(base) if g == group}
        assert len(where) == 1, (ZH[group][0], where)
    assert all(sizes(prepared)[name] > 0 for name in SPLITS)
    # Without grouping the same data splits groups apart, so the check above has teeth.
    loose = prepare_data(
        DataConfig(train=str(path), validation_size=0.2, test_size=0.2, group_split=False, leak_check="off"),
        "classification",
        seed=0,
    )
    split_of = {i: name for name in SPLITS for i in getattr(loose.splits, name).index}
    assert any(len({split_of[i] for i, g in enumerate(base) if g == group}) > 1 for group in range(len(ZH)))


# --- write_prepared -------------------------------------------------------------------------------


def test_write_prepared_writes_splits_removed_rows_and_manifest(repeated: Path, tmp_path: Path) -> None:
    cfg = DataConfig(train=str(repeated))
    cfg.dedup.enabled = True
    prepared = prepare_data(cfg, "classification", seed=42)
    out = tmp_path / "prepared"
    paths = write_prepared(prepared, out)
    names = ["train.csv", "validation.csv", "test.csv", "removed.csv", "manifest.json"]
    assert [p.name for p in paths] == names
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    for name in SPLITS:
        frame = getattr(prepared.splits, name)
        back = read_csv(out / f"{name}.csv")
        assert list(back.columns) == ["text", "label"]
        assert back.values.tolist() == frame[["text", "label"]].astype(str).values.tolist()
    removed = read_csv(out / "removed.csv")
    assert len(removed) == len(prepared.removed)
    assert {"source", "line", "step", "reason", "text", "label"} <= set(removed.columns)
    assert list(removed["line"]) == list(prepared.removed["line"])
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["rows"] == sizes(prepared)
    assert manifest["removed"] == len(prepared.removed)
    assert [s["step"] for s in manifest["steps"]][:2] == ["read train", "dedup train"]


def test_write_prepared_with_nothing_removed(tmp_path: Path) -> None:
    """BUG: with no dropped rows `removed` has no label column and write_prepared raises KeyError('label')."""
    path = write_csv(
        tmp_path / "unique.csv", [(f"question number {i} about {'xyz'[i % 3]}", "ab"[i % 2]) for i in range(20)]
    )
    prepared = prepare_data(DataConfig(train=str(path)), "classification", seed=0)
    assert prepared.removed.empty
    write_prepared(prepared, tmp_path / "out")
    removed = read_csv(tmp_path / "out" / "removed.csv")
    assert removed.empty and {"source", "line", "step", "reason"} <= set(removed.columns)


MULTI = [
    ("my refund is late and the parcel never came", ("refund", "shipping")),
    ("locked out of my account", ("account",)),
    ("charged twice for one order", ("refund",)),
    ("courier lost my package", ("shipping",)),
    ("password reset email never arrives", ("account",)),
    ("wrong item delivered, I want my money back", ("refund", "shipping")),
    ("cannot change my username", ("account",)),
    ("parcel stuck at customs for weeks", ("shipping",)),
    ("the refund went to an old card", ("refund",)),
    ("two factor code does not work", ("account",)),
    ("late delivery so I sent it back for a refund", ("refund", "shipping")),
    ("the app logs me out every hour", ("account",)),
]


def test_write_prepared_joins_multilabel_tuples_with_the_separator(tmp_path: Path) -> None:
    rows = [(text, "|".join(labels)) for text, labels in MULTI]
    rows.append(rows[0])  # one duplicate so dedup removes a row
    path = write_csv(tmp_path / "multi.csv", rows)
    cfg = DataConfig(train=str(path), validation_size=0.2, test_size=0.2)
    cfg.dedup.enabled = True
    prepared = prepare_data(cfg, "multilabel", seed=0)
    assert isinstance(prepared.splits.train["label"].iloc[0], tuple)
    write_prepared(prepared, tmp_path / "out")
    written = pd.concat(read_csv(tmp_path / "out" / f"{name}.csv") for name in SPLITS)
    assert set(written["label"]) <= {"|".join(labels) for _, labels in MULTI}
    assert "refund|shipping" in set(written["label"])
    expected = pd.concat(getattr(prepared.splits, name) for name in SPLITS)["label"].map("|".join)
    assert list(written["label"]) == list(expected)
    removed = read_csv(tmp_path / "out" / "removed.csv")
    assert list(removed["label"]) == ["refund|shipping"]


# --- inspect --------------------------------------------------------------------------------------


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    return write_csv(
        tmp_path / "messy.csv",
        [
            ("where is my parcel", "shipping"),  # line 2
            ("where is my parcel", "shipping"),  # line 3: exact duplicate of line 2
            ("cannot log in", "account"),  # line 4
            ("cannot log in", "shipping"),  # line 5: same text, another label
            ("I want a refund", "Refund"),  # line 6
            ("refund my purchase", "refund "),  # line 7: a lookalike label
            ("", "account"),  # line 8: empty
            ("cafÃ© order never came", "shipping"),  # line 9: UTF-8 read as Latin-1
            ("锟斤拷锟斤拷 密码", "account"),  # line 10: GBK mojibake
            ("reset my password", "account"),  # line 11
        ],
    )


def test_inspect_reports_each_finding_with_counts_and_lines(messy: Path) -> None:
    report = inspect_data(RunConfig(data=DataConfig(train=str(messy))))
    part = report["files"]["train"]
    assert part["rows"] == 10 and part["columns"] == ["text", "label"]
    dup = part["duplicates"]
    assert (dup["exact"]["groups"], dup["exact"]["extra_rows"]) == (2, 2)
    assert [e["rows"] for e in dup["exact"]["examples"]] == ["lines 2, 3", "lines 4, 5"]
    assert dup["conflicts"]["count"] == 1
    assert dup["conflicts"]["examples"][0]["rows"] == "lines 4, 5"
    assert dup["conflicts"]["examples"][0]["labels"] == {"account": 1, "shipping": 1}
    lookalikes = part["labels"]["lookalike_labels"]
    assert len(lookalikes) == 1 and {v.strip().casefold() for v in lookalikes[0]} == {"refund"}
    assert len(lookalikes[0]) == 2
    text = part["text"]
    assert text["empty"] == {"count": 1, "examples": ["line 8"]}
    assert text["encoding_problems"]["count"] == 2
    assert [e["where"] for e in text["encoding_problems"]["examples"]] == ["line 9", "line 10"]
    assert text["numeric_text_columns"] == []
    assert text["scripts"]["latin"] == 8 and text["scripts"]["han"] == 1
    assert "leaks" not in report

    shown = render_text(report)
    assert "10 rows" in shown
    assert "exact duplicates: 2 extra rows in 2 groups" in shown
    assert "lines 2, 3" in shown and "lines 4, 5" in shown
    assert "texts with conflicting labels: 1" in shown
    assert "look like one label" in shown and "--label-map" in shown
    assert "1 empty or missing texts" in shown and "line 8" in shown
    assert "2 rows with encoding damage" in shown and "line 9" in shown and "line 10" in shown


def test_inspect_flags_a_numeric_text_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "ids.csv", [(101, "a"), (102, "b"), (103, "a")])
    report = inspect_data(RunConfig(data=DataConfig(train=str(path))))
    assert report["files"]["train"]["text"]["numeric_text_columns"] == ["text"]
    assert "text columns that hold numbers: ['text']" in render_text(report)


def test_inspect_reports_leaks_across_files(messy: Path, tmp_path: Path) -> None:
    validation = write_csv(tmp_path / "v.csv", [("Where is my parcel?", "shipping"), ("a new text", "account")])
    test = write_csv(tmp_path / "t.csv", [("reset my password", "account")])
    cfg = RunConfig(data=DataConfig(train=str(messy), validation=str(validation), test=str(test)))
    report = inspect_data(cfg)
    assert set(report["files"]) == set(SPLITS)
    leaks = report["leaks"]
    assert leaks["count"] == 2
    assert leaks["by_pair"] == {"validation in train": 1, "test in train": 1}
    pairs = {(e["a"], e["b"], e["kind"]) for e in leaks["examples"]}
    assert pairs == {("validation line 2", "train line 2", "exact"), ("test line 2", "train line 11", "exact")}
    shown = render_text(report)
    assert "leakage across splits: 2 rows" in shown
    assert "validation line 2 ~ train line 2" in shown and "test line 2 ~ train line 11" in shown


@pytest.mark.parametrize(
    ("text", "script"),
    [
        ("我想退款，快递一直没到", "han"),
        ("where is my parcel?", "latin"),
        ("我的iPhone坏了怎么办", "mixed"),
        ("Привет", "other"),
        ("12345 !!", "none"),
    ],
)
def test_script_of(text: str, script: str) -> None:
    assert script_of(text) == script


# --- the command line -----------------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    from tunesmith.cli import main

    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)

    def run(*argv: object) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def one_error_line(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("tunesmith: error:")]
    assert len(errors) == 1, err
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_cli_data_inspect_prints_findings_and_writes_reports(cli, messy: Path, tiny_model: str, tmp_path: Path) -> None:
    html_path, json_path = tmp_path / "report.html", tmp_path / "report.json"
    args = ["data", "inspect", messy, "--text-column", "text", "--label-column", "label", "--model", tiny_model]
    code, out, err = cli(*args, "--report", html_path)
    assert code == 0, err
    assert "exact duplicates: 2 extra rows in 2 groups" in out
    assert "texts with conflicting labels: 1" in out and "2 rows with encoding damage" in out
    assert "text length (tokens)" in out  # the model's tokenizer counted them
    page = html_path.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>")
    assert "exact duplicates: 2 extra rows in 2 groups" in page and "lines 2, 3" in page
    # the plots: rows per label and the token-length histogram with the length limit, drawn as inline SVG
    assert page.count("<svg") == 2 and "train: rows per label" in page and "train: length" in page
    assert "limit 128" in page and not re.search(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", page)
    code, _, err = cli(*args, "--report", json_path)
    assert code == 0, err
    report = json.loads(json_path.read_text(encoding="utf-8"))
    assert report["files"]["train"]["duplicates"]["exact"]["groups"] == 2
    text = report["files"]["train"]["text"]
    assert text["tokens"]["max"] > 0
    counted = text["tokens_histogram"]
    assert sum(counted["counts"]) == report["files"]["train"]["rows"]  # every row counted, empty ones too
    assert counted["edges"][0] == text["tokens"]["min"] and counted["edges"][-1] == text["tokens"]["max"]


def test_cli_data_inspect_missing_file_is_one_error_line(cli, tiny_model: str) -> None:
    code, _, err = cli("data", "inspect", "nowhere.csv", "--model", tiny_model)
    one_error_line(code, err, "nowhere.csv", "not found")


def test_cli_data_prepare_then_train(cli, repeated: Path, tiny_model: str, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    code, stdout, err = cli("data", "prepare", "--train", repeated, "--output", out, "--model", tiny_model)
    assert code == 0, err
    files = [
        "train.csv",
        "validation.csv",
        "test.csv",
        "removed.csv",
        "manifest.json",
        "report.html",
        "report.json",
        "tunesmith.json",
    ]
    assert sorted(p.name for p in out.iterdir()) == sorted(files)
    assert "removed.csv" in stdout
    removed = read_csv(out / "removed.csv")
    assert len(removed) > 0 and set(removed["step"]) == {"dedup"}  # dedup is on by default here
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    steps = [s["step"] for s in manifest["steps"]]
    assert "clean train" in steps and "dedup train" in steps  # and so is cleaning
    assert sum(manifest["rows"].values()) + manifest["removed"] == 60
    written = {name: read_csv(out / f"{name}.csv") for name in SPLITS}
    assert all(list(frame.columns) == ["text", "label"] for frame in written.values())
    assert not pd.concat(written.values())["text"].map(normalise_key).duplicated().any()
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["leaks"]["count"] == 0 and set(report["files"]) == set(SPLITS)
    assert "tunesmith data report" in (out / "report.html").read_text(encoding="utf-8")

    # An existing folder is not overwritten by accident.
    before = (out / "train.csv").read_bytes()
    code, _, err = cli("data", "prepare", "--train", repeated, "--output", out, "--model", tiny_model)
    one_error_line(code, err, str(out), "--overwrite")
    assert (out / "train.csv").read_bytes() == before

    # The prepared files train as they are.
    code, _, err = cli(
        "train",
        "--train",
        out / "train.csv",
        "--validation",
        out / "validation.csv",
        "--test",
        out / "test.csv",
        "--text-column",
        "text",
        "--label-column",
        "label",
        "--model",
        tiny_model,
        "--epochs",
        "1",
        "--no-baseline",
        "--output",
        tmp_path / "run",
    )
    assert code == 0, err
    assert (tmp_path / "run" / "config.yaml").is_file()


def test_cli_data_prepare_no_dedup_and_overwrite(cli, repeated: Path, tiny_model: str, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    out.mkdir()
    (out / "old.txt").write_text("x")
    base = ["data", "prepare", "--train", repeated, "--output", out, "--model", tiny_model, "--no-dedup"]
    code, _, err = cli(*base, "--overwrite")  # a folder tunesmith did not make is never replaced
    one_error_line(code, err, str(out), "not a folder tunesmith made", "old.txt")
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    (out / "old.txt").unlink()
    assert cli(*base)[0] == 0
    code, _, err = cli(*base, "--overwrite")  # an earlier prepare is
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert not any(s["step"].startswith("dedup") for s in manifest["steps"])
    assert manifest["removed"] == 0 and sum(manifest["rows"].values()) == 60
    written = pd.concat(read_csv(out / f"{name}.csv") for name in SPLITS)
    assert written["text"].duplicated().any()  # the repeats are still there
    train = read_csv(out / "train.csv")
    held = pd.concat([read_csv(out / "validation.csv"), read_csv(out / "test.csv")])
    assert keys(train).isdisjoint(keys(held))  # grouped, so still no leak


def test_cli_data_prepare_missing_file_is_one_error_line(cli, tiny_model: str, tmp_path: Path) -> None:
    code, _, err = cli("data", "prepare", "--train", "missing.csv", "--output", tmp_path / "o", "--model", tiny_model)
    one_error_line(code, err, "missing.csv", "not found")


def test_cli_data_prepare_needs_an_output(cli, repeated: Path, tiny_model: str) -> None:
    code, _, err = cli("data", "prepare", "--train", repeated, "--model", tiny_model)
    one_error_line(code, err, "--output")


def test_label_counts_survive_the_pipeline(repeated: Path) -> None:
    """Stratified holdouts: each class keeps a share of validation and test close to its share of the data."""
    prepared = prepare_data(DataConfig(train=str(repeated), group_split=False, leak_check="off"), "classification", 1)
    for name in ("validation", "test"):
        counts = Counter(getattr(prepared.splits, name)["label"])
        assert set(counts) == set(INTENTS) and max(counts.values()) - min(counts.values()) <= 1


def test_prepare_writes_grouped_kfold_indices_of_the_train_file(tmp_path: Path) -> None:
    import json

    from tunesmith.data.prepare import prepare_data, write_prepared

    cfg = RunConfig()
    cfg.data.train = str(write_intents(tmp_path / "intents.csv", per_class=30))
    cfg.data.folds = 3
    prepared = prepare_data(cfg.data, cfg.task, seed=0, with_folds=True)
    write_prepared(prepared, tmp_path / "out")
    folds = json.loads((tmp_path / "out" / "folds.json").read_text())
    train = pd.read_csv(tmp_path / "out" / "train.csv")
    assert len(folds) == 3
    validated = sorted(i for fold in folds for i in fold["validation"])
    assert validated == list(range(len(train)))  # every train row is validated exactly once
    for fold in folds:
        assert not set(fold["train"]) & set(fold["validation"])
        # Grouping: a text never sits on both sides of a fold.
        assert not set(train.loc[fold["train"], "text"]) & set(train.loc[fold["validation"], "text"])
