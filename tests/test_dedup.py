"""Deduplication and label conflicts on tiny English and Chinese frames (each test runs in milliseconds)."""

from __future__ import annotations

import pandas as pd
import pytest

from tunesmith.data.dedup import (
    DedupConfig,
    cross_split_leaks,
    deduplicate,
    exact_groups,
    find_conflicts,
    group_ids,
    near_groups,
    normalise_key,
)
from tunesmith.errors import TunesmithError

EN = "The delivery was fast and the phone works perfectly, I would buy from this shop again."
EN_NEAR = "The delivery was fast and the phone works perfectly, I would order from this shop again."
EN_FAR = "The delivery was quick and the phone works perfectly, I would order from this shop again."  # jaccard ~0.75
EN_OTHER = "Terrible customer service, the battery died after two days and nobody answered my emails."
ZH = "这家酒店的位置非常好，离地铁站很近，房间干净整洁，服务员态度也很热情，下次还会再来住。"
ZH_NEAR = "这家酒店的位置非常好，离地铁站很远，房间干净整洁，服务员态度也很热情，下次还会再来住。"  # 近 -> 远
ZH_OTHER = "电脑的屏幕很清晰，键盘手感不错，但是电池续航太短了，用两个小时就没电了，有点失望。"
ZH_OPPOSITE = "这家酒店的位置很差，离地铁站很远，房间又脏又乱，服务员态度也很冷淡，下次不会再来住。"


def frame(texts: list[str], labels: list | None = None, start: int = 0) -> pd.DataFrame:
    """Index from `start` so that tests notice a position used where an index label belongs."""
    data = {"text": texts} if labels is None else {"text": texts, "label": labels}
    return pd.DataFrame(data, index=range(start, start + len(texts)))


def test_normalise_key_folds_case_width_spacing_and_punctuation():
    assert normalise_key("  Hello,   WORLD!! ") == normalise_key("hello world") == "hello world"
    assert normalise_key("ＨＥＬＬＯ，ｗｏｒｌｄ！") == "hello world"  # full-width letters and punctuation
    assert normalise_key("good.Fast") == normalise_key("good. fast")
    assert normalise_key("你好，世界！") == normalise_key("你好 世界") == normalise_key("你好世界") == "你好世界"
    assert normalise_key("hello world") != normalise_key("helloworld")  # English spaces still separate words
    assert normalise_key("???") != normalise_key("!!!")  # punctuation-only texts are not all one text


def test_exact_groups_in_english_and_chinese_keep_the_index():
    texts = pd.Series(
        ["Great phone!", "很好用，推荐。", "great   PHONE", "ＧＲＥＡＴ ｐｈｏｎｅ", "unrelated", "很好用 推荐"],
        index=[10, 11, 12, 13, 14, 15],
    )
    assert exact_groups(texts) == [[10, 12, 13], [11, 15]]


def test_near_duplicates_in_english():
    texts = pd.Series([EN, EN_OTHER, EN_NEAR], index=[5, 6, 7])
    assert exact_groups(texts) == []
    assert near_groups(texts, DedupConfig()) == [[5, 7]]


def test_near_duplicates_respect_the_threshold():
    # LSH proposes this pair at 0.8 (estimate 0.75): the check against the threshold must turn it down.
    texts = pd.Series([EN, EN_FAR])
    assert near_groups(texts, DedupConfig(threshold=0.8)) == []
    assert near_groups(texts, DedupConfig(threshold=0.7)) == [[0, 1]]


def test_near_duplicates_in_chinese_one_character_changed():
    texts = pd.Series([ZH, ZH_OTHER, ZH_NEAR, ZH_OPPOSITE], index=[20, 21, 22, 23])
    assert near_groups(texts, DedupConfig(threshold=0.7)) == [[20, 22]]
    # Unrelated sentences stay apart even at a loose threshold.
    assert near_groups(pd.Series([ZH, ZH_OTHER, EN, EN_OTHER]), DedupConfig(threshold=0.5)) == []


def test_near_groups_include_exact_duplicates_and_short_texts():
    texts = pd.Series([EN, "ok", EN.upper(), "OK!", "no"])
    assert near_groups(texts, DedupConfig()) == [[0, 2], [1, 3]]  # "ok" is shorter than n: one shingle, itself


def test_keep_first_or_majority():
    df = frame(["nice phone", "Nice phone!", "NICE PHONE", "bad"], ["neg", "pos", "pos", "neg"], start=100)
    first = deduplicate(df, DedupConfig(keep="first", conflicts="report"))
    assert list(first.kept.index) == [100, 103]
    majority = deduplicate(df, DedupConfig(keep="majority", conflicts="report"))
    assert list(majority.kept.index) == [101, 103]
    assert majority.kept.loc[101, "label"] == "pos"
    assert majority.removed.loc[102, "reason"] == "exact duplicate of row 101"
    assert majority.removed.loc[100, "reason"] == "exact duplicate of row 101; its label 'neg' differs from 'pos'"


def test_removed_rows_name_the_kept_row():
    df = frame([EN, EN_OTHER, EN_NEAR, EN.lower()], ["pos", "neg", "pos", "pos"], start=40)
    result = deduplicate(df, DedupConfig())
    assert list(result.kept.index) == [40, 41]
    assert result.removed.loc[43, "reason"] == "exact duplicate of row 40"
    assert result.removed.loc[42, "reason"].startswith("near duplicate of row 40 (jaccard 0.")
    assert list(result.removed["duplicate_of"]) == [40, 40]
    assert (result.exact_groups, result.near_groups, result.conflicts) == (1, 1, [])


def test_exact_only_leaves_near_duplicates():
    df = frame([EN, EN_NEAR, EN.lower()], ["pos", "pos", "pos"])
    result = deduplicate(df, DedupConfig(near=False))
    assert list(result.kept.index) == [0, 1]
    assert result.near_groups == 0


CONFLICTED = frame(
    ["great phone", "Great phone!", "GREAT PHONE", "bad battery", "bad battery.", "fine"],
    ["pos", "neg", "pos", "pos", "neg", "pos"],
    start=100,
)


def test_conflicts_report_keeps_one_row_per_group_and_lists_them():
    result = deduplicate(CONFLICTED, DedupConfig(conflicts="report"))
    assert list(result.kept.index) == [100, 103, 105]
    assert [(c.rows, c.counts, c.kind, c.majority) for c in result.conflicts] == [
        ([100, 101, 102], {"pos": 2, "neg": 1}, "exact", "pos"),
        ([103, 104], {"pos": 1, "neg": 1}, "exact", None),
    ]


def test_conflicts_drop_removes_every_row_of_a_conflicting_group():
    result = deduplicate(CONFLICTED, DedupConfig(conflicts="drop"))
    assert list(result.kept.index) == [105]
    assert result.removed["reason"].str.startswith("conflicting labels").all()
    assert result.removed["duplicate_of"].isna().all()
    assert len(result.conflicts) == 2


def test_conflicts_majority_keeps_the_majority_label_and_drops_ties():
    result = deduplicate(CONFLICTED, DedupConfig(conflicts="majority"))
    assert list(result.kept.index) == [100, 105]
    reasons = result.removed["reason"]
    assert reasons[101] == "conflicting labels ('pos'×2, 'neg'×1): 'neg' outvoted, row 100 kept"
    assert reasons[102] == "exact duplicate of row 100"
    assert (
        reasons[103] == reasons[104] == "conflicting labels ('pos'×1, 'neg'×1) among rows 103, 104: tied, all dropped"
    )
    # Without deduplication only the outvoted row goes: agreeing repeats stay.
    labels_only = deduplicate(CONFLICTED, DedupConfig(exact=False, near=False, conflicts="majority"))
    assert list(labels_only.kept.index) == [100, 102, 105]


def test_conflicts_in_near_groups_and_multilabel_tuples():
    df = frame([EN, EN_NEAR, EN_OTHER], [("fast", "good"), ("good",), ("bad",)])
    (conflict,) = find_conflicts(df, near_groups(df["text"], DedupConfig()))
    assert conflict.rows == [0, 1]
    assert conflict.counts == {("fast", "good"): 1, ("good",): 1}
    assert conflict.kind == "near"
    assert find_conflicts(df, exact_groups(df["text"])) == []


def test_group_ids_put_near_duplicates_together():
    texts = pd.Series([ZH, EN, ZH_NEAR, EN_OTHER, EN_NEAR, ZH.replace("，", ",")], index=[7, 3, 9, 1, 4, 8])
    ids = group_ids(texts, DedupConfig(threshold=0.7))
    assert list(ids.index) == [7, 3, 9, 1, 4, 8]
    assert ids[7] == ids[9] == ids[8]
    assert ids[3] == ids[4]
    assert len({ids[7], ids[3], ids[1]}) == 3
    exact_only = group_ids(texts, DedupConfig(threshold=0.7, near=False))
    assert exact_only[7] == exact_only[8] != exact_only[9]


def test_cross_split_leaks_finds_exact_and_near_leaks():
    train = frame([EN, ZH, "something else entirely"], start=0)
    test = frame(
        ["the delivery was fast and the phone works perfectly i would buy from this shop again", ZH_NEAR, ZH_OTHER]
    )
    test.index = [50, 51, 52]
    leaks = cross_split_leaks({"train": train, "test": test}, DedupConfig(threshold=0.7))
    assert [(x.split, x.index, x.other_split, x.other_index, x.kind) for x in leaks] == [
        ("test", 50, "train", 0, "exact"),
        ("test", 51, "train", 1, "near"),
    ]
    assert leaks[0].similarity == 1.0
    assert 0.7 <= leaks[1].similarity < 1.0
    assert str(leaks[1]).startswith("test row 51 is a near (jaccard 0.")
    # Exact leaks only, when near duplicates are off.
    no_near = cross_split_leaks({"train": train, "test": test}, DedupConfig(threshold=0.7, near=False))
    assert [(x.index, x.kind) for x in no_near] == [(50, "exact")]


def test_cross_split_leaks_clean_splits():
    splits = {"train": frame([EN, ZH]), "validation": frame([EN_OTHER]), "test": frame([ZH_OTHER])}
    assert cross_split_leaks(splits, DedupConfig()) == []


def test_same_result_twice():
    texts = [f"{ZH[: 10 + i % 7]} {i % 5} {EN[i % 11 :]}" for i in range(40)]
    df = frame(texts, [("pos", "neg")[i % 3 == 0] for i in range(40)])
    cfg = DedupConfig(threshold=0.6)
    one, two = deduplicate(df, cfg), deduplicate(df, DedupConfig(threshold=0.6))
    assert len(one.removed) > 0
    pd.testing.assert_frame_equal(one.kept, two.kept)
    pd.testing.assert_frame_equal(one.removed, two.removed)
    assert one.conflicts == two.conflicts
    pd.testing.assert_series_equal(group_ids(df["text"], cfg), group_ids(df["text"], cfg))


def test_invalid_config_is_one_clear_error():
    with pytest.raises(TunesmithError, match="--dedup-threshold"):
        deduplicate(frame(["a"]), DedupConfig(threshold=1.5))
    with pytest.raises(TunesmithError, match="--dedup-keep"):
        deduplicate(frame(["a"]), DedupConfig(keep="last"))


@pytest.mark.parametrize(("distinct", "size"), [(60, "about 1 MB"), (2_390_000, "about 8.0 GB")])
def test_the_near_duplicate_limit_names_a_readable_size(distinct: int, size: str) -> None:
    """A bug said "would need about 0.0 GB" for a small corpus over a low limit."""
    from tunesmith.data.dedup import DedupConfig, check_near_fits

    with pytest.raises(TunesmithError, match=f"{size} of memory"):
        check_near_fits(distinct, DedupConfig(near_max_texts=5))
