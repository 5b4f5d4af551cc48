"""--task ner: spans and CoNLL in, BIO tags on sub-word tokens, entity-level scores, spans with offsets out."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import Result, one_error_line, train_args
from tunesmith.data.io import read_table
from tunesmith.data.spans import canonical, join_tokens, tags_to_spans
from tunesmith.demo_ner import sentence_rows
from tunesmith.errors import TunesmithError
from tunesmith.tasks.ner import NER
from tunesmith.tasks.token_loss import IGNORE

# English: the tiny BERT has MiniLM's English vocabulary, where every Chinese character is [UNK]. Chinese offsets
# are checked with a byte-level tokenizer below, and on real data by the NER demo.
CITIES = ["Paris", "London", "Tokyo", "Berlin", "Madrid"]
PEOPLE = ["Alice", "Bob", "Carol", "Dave"]
FILLER = ["please", "ship", "my", "order", "to", "from", "today", "the", "parcel"]


def entity_rows(n: int, seed: int) -> list[dict]:
    """Sentences of filler words with people and cities at random places, and their character spans."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 6))]
        for kind, names in (("PER", PEOPLE), ("LOC", CITIES)):
            words.insert(rng.randint(0, len(words)), (kind, rng.choice(names)))
        text, entities = "", []
        for word in words:
            text += " " if text else ""
            if isinstance(word, tuple):
                entities.append({"start": len(text), "end": len(text) + len(word[1]), "label": word[0]})
                word = word[1]
            text += word
        rows.append({"text": text, "entities": entities})
    return rows


def _tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def test_tokens_join_into_text_with_spaces_only_between_non_cjk() -> None:
    text, offsets = join_tokens(["李", "明", "在", "Paris", "工", "作", "."])
    assert text == "李明在 Paris 工作 ."
    assert [text[s:e] for s, e in offsets] == ["李", "明", "在", "Paris", "工", "作", "."]


@pytest.mark.parametrize(
    ("tags", "want"),
    [
        (["B-PER", "I-PER", "O", "B-LOC"], [(0, 2, "PER"), (3, 4, "LOC")]),
        (["I-PER", "I-PER", "I-LOC", "O"], [(0, 2, "PER"), (2, 3, "LOC")]),  # IOB1: I- opens after O or a new type
        (["S-PER", "B-LOC", "E-LOC", "S-LOC"], [(0, 1, "PER"), (1, 3, "LOC"), (3, 4, "LOC")]),  # BIOES
        (["B-PER", "B-PER", "O", "O"], [(0, 1, "PER"), (1, 2, "PER")]),
    ],
)
def test_tags_become_spans(tags: list[str], want: list[tuple]) -> None:
    assert tags_to_spans(tags, [(i, i + 1) for i in range(4)]) == want


def test_a_conll_file_reads_as_text_and_spans(tmp_path: Path) -> None:
    conll = "-DOCSTART- O\n\n李 B-PER\n明 I-PER\n去 O\n北 B-LOC\n京 I-LOC\n\nAlice B-PER\nflew O\nto O\nParis B-LOC\n"
    (tmp_path / "train.conll").write_text(conll, encoding="utf-8")
    table = read_table(tmp_path / "train.conll")
    assert table["text"].tolist() == ["李明去北京", "Alice flew to Paris"]
    assert [json.loads(x) for x in table["label"]] == [[[0, 2, "PER"], [3, 5, "LOC"]], [[0, 5, "PER"], [14, 19, "LOC"]]]


@pytest.mark.parametrize(
    ("body", "needle"), [("李 B-PER\n明\n", "line 2 has no tag"), ("李 B-PER\n明 PERSON\n", "line 2: tag 'PERSON'")]
)
def test_a_bad_conll_line_is_named(tmp_path: Path, body: str, needle: str) -> None:
    (tmp_path / "bad.conll").write_text(body, encoding="utf-8")
    with pytest.raises(TunesmithError, match=needle):
        read_table(tmp_path / "bad.conll")


def test_every_sub_word_token_of_an_entity_is_tagged(tiny_model: str, tiny_lm: str) -> None:
    frame = pd.DataFrame(
        {
            "text": ["Alice refunded 李明 in Kathmandu"],
            "label": [canonical([(0, 5, "PER"), (15, 17, "PER"), (21, 30, "LOC")])],
        }
    )
    for path in (tiny_model, tiny_lm):  # WordPiece, and byte-level BPE that cuts a character into bytes
        tokenizer = _tokenizer(path)
        task = NER()
        task.fit(frame, "f")
        (ex,) = task.encode(tokenizer, frame, 64)
        enc = tokenizer(frame["text"][0], return_offsets_mapping=True)
        tags = [task.tags[t] if t != IGNORE else None for t in ex["labels"].tolist()]
        covered: dict[str, set[int]] = {"PER": set(), "LOC": set(), "O": set()}
        starts = []
        for (s, e), tag in zip(enc["offset_mapping"], tags, strict=True):
            if tag is not None:
                covered[tag.split("-")[-1]] |= set(range(s, e))
                starts += [s] if tag.startswith("B-") else []
        # a character cut into several byte tokens has each of them tagged with its entity
        assert covered["PER"] == set(range(0, 5)) | {15, 16} and covered["LOC"] == set(range(21, 30))
        assert sorted(starts) == [0, 15, 21]  # one B- per entity, on its first token
        assert not covered["O"] & (covered["PER"] | covered["LOC"])


def test_predicted_tags_become_spans_of_the_original_text(tiny_lm: str) -> None:
    tokenizer = _tokenizer(tiny_lm)
    text = "寄到 上海市 now"
    task = NER(labels=["LOC"])  # tags: O B-LOC I-LOC
    enc = tokenizer(text, return_offsets_mapping=True)
    inside = [3 <= s < 6 for s, _ in enc["offset_mapping"]]  # the byte tokens of 上海市
    first = inside.index(True)
    tag_ids = [1 if i == first else 2 if inside[i] else 0 for i in range(len(inside))]
    scores = np.eye(3)[tag_ids] * 0.9 + 0.1 / 3
    (described,) = task.describe_texts([scores], [text], tokenizer, 64)
    (entity,) = described["entities"]
    assert (entity["start"], entity["end"], entity["text"], entity["label"]) == (3, 6, "上海市", "LOC")
    assert entity["score"] == pytest.approx(0.9 + 0.1 / 3)


def test_entities_sharing_a_character_are_one(tiny_model: str) -> None:
    """Fails before: e5's tokenizer gives a lone "▁" the first character of the word after it, and a model that
    tagged both B-ORG printed 国 and 国务院 as two organisations."""

    class SharedFirst:
        is_fast = True

        def __call__(self, texts: list[str], **_: object) -> dict:
            return {
                "input_ids": [[0, 5, 6, 7, 2]],
                "offset_mapping": [[(0, 0), (0, 1), (0, 3), (3, 5), (0, 0)]],
                "special_tokens_mask": [[1, 0, 0, 0, 1]],
            }

    task = NER(labels=["ORG", "PER"])  # O B-ORG I-ORG B-PER I-PER
    scores = np.eye(5)[[0, 1, 1, 0, 0]]
    (described,) = task.describe_texts([scores], ["国务院总理"], SharedFirst(), 16)
    assert [(e["start"], e["end"], e["text"]) for e in described["entities"]] == [(0, 3, "国务院")]


def test_entity_scores_count_exact_entities() -> None:
    task = NER(labels=["LOC", "PER"])  # tags: O B-LOC I-LOC B-PER I-PER
    gold = np.array([IGNORE, 3, 4, 0, 1, 2, 0, IGNORE])
    pred_ids = [0, 3, 4, 0, 1, 0, 0, 0]  # PER right; LOC cut short: wrong
    scores = np.eye(5)[pred_ids]
    m = task.metrics([scores], [gold])
    assert m["entity_precision"] == pytest.approx(1 / 2) and m["entity_recall"] == pytest.approx(1 / 2)
    assert m["entity_f1"] == pytest.approx(1 / 2) and m["token_accuracy"] == pytest.approx(5 / 6)
    assert m["per_type"]["PER"]["f1"] == 1 and m["per_type"]["LOC"]["f1"] == 0 and m["per_type"]["LOC"]["support"] == 1


def test_rows_without_entities_train_as_all_outside(tiny_model: str) -> None:
    """Fails before: a row with no entity (most sentences of real text) raised a ValueError from zip."""
    frame = pd.DataFrame({"text": ["nothing here", "Alice in Paris"], "label": ["[]", '[[0, 5, "PER"]]']})
    task = NER()
    task.fit(frame, "train.jsonl")
    empty, _ = task.encode(_tokenizer(tiny_model), frame, 32)
    assert set(empty["labels"].tolist()) == {IGNORE, 0} and task.labels == ["PER"]


@pytest.mark.parametrize(
    ("label", "needle"),
    [
        ('[[0, 3, "PER"], [2, 5, "LOC"]]', "overlap"),
        ('[[0, 99, "PER"]]', "outside the text"),
        ("PER", "not a list of entity spans"),
    ],
)
def test_bad_spans_are_one_line(label: str, needle: str) -> None:
    frame = pd.DataFrame({"text": ["Alice in Paris"], "label": [label]}, index=[4])
    with pytest.raises(TunesmithError, match=needle) as err:
        NER().fit(frame, "train.jsonl")
    assert "line 5" in str(err.value)


def test_people_daily_paragraphs_become_sentences_with_names_joined() -> None:
    line = "１２月/t  ，/w  中共中央/nt  主席/n  江/nr  泽民/nr  到/v  北京/ns  。/w  兰/nr  红光/nr  摄/Vg"
    (first, spans), (second, later) = sentence_rows(line)
    assert first == "１２月，中共中央主席江泽民到北京。" and second == "兰红光摄"
    assert [(first[s:e], k) for s, e, k in spans] == [("中共中央", "ORG"), ("江泽民", "PER"), ("北京", "LOC")]
    assert [(second[s:e], k) for s, e, k in later] == [("兰红光", "PER")]


@pytest.fixture
def trained(tiny_model: str, cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    with (tmp_path / "ents.jsonl").open("w", encoding="utf-8") as f:
        for row in entity_rows(160, 0):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    args = train_args(tiny_model, "ents.jsonl", "run", "--task", "ner", "--label-column", "entities")
    result = cli(*args, "--epochs", "10", "--batch-size", "16", "--lr", "1e-2", "--baseline-max-rows", "40")
    assert result.code == 0, result.err
    assert "entity_f1" in result.out
    return tmp_path / "run"


def test_ner_trains_predicts_spans_evaluates_and_reports(
    trained: Path, cli: Callable[..., Result], tmp_path: Path
) -> None:
    metrics = json.loads((trained / "metrics.json").read_text())
    test = metrics["finetuned"]["test"]
    # Names and cities come from short fixed lists: far above a tagger that finds nothing (F1 0).
    assert test["entity_f1"] > 0.7, test
    assert metrics["base"]["kind"] == "linear_probe" and "token states" in metrics["base"]["description"]
    assert set(test["per_type"]) == {"LOC", "PER"}
    assert (trained / "report.html").is_file()

    text = "please ship Carol to Madrid today"
    predicted = cli("predict", trained, "--text", text)
    assert predicted.code == 0, predicted.err
    (line,) = predicted.json_lines()
    for entity in line["entities"]:
        assert text[entity["start"] : entity["end"]] == entity["text"] and 0 < entity["score"] <= 1
    assert {(e["text"], e["label"]) for e in line["entities"]} >= {("Madrid", "LOC")}

    (tmp_path / "new.csv").write_text(f"text\n{text}\nAlice from Tokyo\n", encoding="utf-8")
    assert cli("predict", trained, "--input", "new.csv", "--output", "p.csv").code == 0
    cells = pd.read_csv(tmp_path / "p.csv")["entities"].map(json.loads).tolist()
    assert cells[0] == line["entities"]
    studio = cli("predict", trained, "--input", "new.csv", "--output", "ls.json", "--format", "label-studio")
    assert studio.code == 0, studio.err
    results = json.loads((tmp_path / "ls.json").read_text())[0]["predictions"][0]["result"]
    assert [(r["value"]["start"], r["value"]["labels"][0]) for r in results] == [
        (e["start"], e["label"]) for e in line["entities"]
    ]
    assert all(r["type"] == "labels" and r["from_name"] == "entities" for r in results)

    evaluated = cli("evaluate", trained, "--test", "ents.jsonl")
    assert evaluated.code == 0 and "entity_f1" in evaluated.out, evaluated.err


def test_ner_trains_on_conll_and_refuses_unknown_types(
    tiny_model: str, cli: Callable[..., Result], tmp_path: Path
) -> None:
    lines = []
    for row in entity_rows(60, 1):
        text, spans = row["text"], row["entities"]
        for word_start, word in _words(text):
            tag = "O"
            for e in spans:
                if e["start"] <= word_start < e["end"]:
                    tag = ("B-" if word_start == e["start"] else "I-") + e["label"]
            lines.append(f"{word} {tag}")
        lines.append("")
    (tmp_path / "train.conll").write_text("\n".join(lines), encoding="utf-8")
    (tmp_path / "test.conll").write_text("Alice B-ORG\nwent O\n", encoding="utf-8")
    args = train_args(tiny_model, tmp_path / "train.conll", str(tmp_path / "run"), "--task", "ner", "--no-baseline")
    one_error_line(cli(*args, "--test", tmp_path / "test.conll"), "'ORG'", "never appears")
    result = cli(*args, "--epochs", "1", "--batch-size", "16", "--lr", "1e-3")
    assert result.code == 0, result.err


def _words(text: str) -> list[tuple[int, str]]:
    out, at = [], 0
    for word in text.split(" "):
        out.append((at, word))
        at += len(word) + 1
    return out
