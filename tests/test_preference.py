"""--task dpo and orpo: the losses against the published formulas and TRL, answer-only log-probabilities, the data,
and whole runs on a tiny Llama (generate, evaluate and the report work on them)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from conftest import WORDS, one_error_line
from tunesmith.data.config import DataConfig
from tunesmith.data.preferences import load_pair_splits, load_pairs
from tunesmith.tasks.preference import (
    DPO,
    ORPO,
    PairCollator,
    answer_log_probs,
    dpo_losses,
    encode_pairs,
    orpo_losses,
    reference_log_probs,
)
from tunesmith.tasks.token_loss import IGNORE


def _write_pairs(path: Path, n: int = 60) -> Path:
    import random

    rng = random.Random(0)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            q = " ".join(rng.choice(WORDS) for _ in range(4))
            prompt = q + "?" if i % 3 else f"请回答：{q}"
            fh.write(json.dumps({"prompt": prompt, "chosen": f"yes, {q}", "rejected": "no"}, ensure_ascii=False) + "\n")
    return path


def _tokenizer(tiny_lm: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_lm)


def _model(tiny_lm: str, seed: int = 0):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_lm)
    if seed:  # a policy that differs from its reference
        torch.manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


PAIRS = [
    {"prompt": "where is my parcel?", "chosen": "It is on its way.", "rejected": "no"},
    {"prompt": "我的包裹在哪里？", "chosen": "已经发货了。", "rejected": "不知道，别问我，自己去查快递单号吧"},
]


def _pairs(tmp_path: Path, rows: list[dict] = PAIRS):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return load_pairs(str(path), DataConfig())


def test_dpo_loss_is_the_published_formula() -> None:
    pc, pr, rc, rr = (
        torch.tensor(v, dtype=torch.float64) for v in ([-5.0, -9.0], [-7.0, -2.0], [-6.0, -8.5], [-6.5, -3.0])
    )
    losses, reward_c, reward_r = dpo_losses(pc, pr, rc, rr, beta=0.1)
    for i in range(2):
        z = 0.1 * ((pc[i] - rc[i]) - (pr[i] - rr[i]))
        assert losses[i].item() == pytest.approx(-math.log(1 / (1 + math.exp(-z))), rel=1e-12)
        assert reward_c[i].item() == pytest.approx(0.1 * (pc[i] - rc[i]).item())
        assert reward_r[i].item() == pytest.approx(0.1 * (pr[i] - rr[i]).item())


def test_orpo_loss_is_the_published_formula() -> None:
    mean_c, mean_r = (
        torch.tensor([-0.3, -2.0, -1e-4], dtype=torch.float64),
        torch.tensor([-1.5, -0.1, -3.0], dtype=torch.float64),
    )
    losses, log_odds = orpo_losses(mean_c, mean_r, beta=0.25)
    for i in range(3):
        pc, pr = math.exp(mean_c[i]), math.exp(mean_r[i])
        ratio = math.log((pc / (1 - pc)) / (pr / (1 - pr)))
        assert log_odds[i].item() == pytest.approx(ratio, rel=1e-9)
        expected = -mean_c[i].item() - 0.25 * math.log(1 / (1 + math.exp(-ratio)))
        assert losses[i].item() == pytest.approx(expected, rel=1e-9)


def test_answer_log_probs_count_only_the_answer(tiny_lm: str, tmp_path: Path) -> None:
    tokenizer, model = _tokenizer(tiny_lm), _model(tiny_lm)
    examples = encode_pairs(tokenizer, _pairs(tmp_path), 256)
    batch = PairCollator(tokenizer.pad_token_id)(examples)
    with torch.no_grad():
        logps, counts = answer_log_probs(model, batch)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.log_softmax(-1)
    for row in range(4):
        labels = batch["labels"][row]
        targets = [t for t in range(1, len(labels)) if labels[t] != IGNORE]
        by_hand = sum(logits[row, t - 1, labels[t]].item() for t in targets)
        assert logps[row].item() == pytest.approx(by_hand, abs=1e-4)
        assert counts[row].item() == len(targets)
        answer = tokenizer.decode(batch["input_ids"][row, targets[0] : targets[-1] + 1])
        pair = PAIRS[row % 2]
        assert answer.startswith(pair["chosen"] if row < 2 else pair["rejected"])  # the prompt is never a target


def test_dpo_matches_trl_on_the_same_batch(tiny_lm: str, tmp_path: Path) -> None:
    """TRL's DPOTrainer computes its loss with its own forward passes (policy and reference model) on our batch."""
    pytest.importorskip("trl")
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    tokenizer, policy, ref = _tokenizer(tiny_lm), _model(tiny_lm, seed=3), _model(tiny_lm)
    examples = encode_pairs(tokenizer, _pairs(tmp_path), 256)
    collate = PairCollator(tokenizer.pad_token_id)
    examples = reference_log_probs(ref, examples, collate, 8, torch.device("cpu"))
    batch = collate(examples)
    task = DPO(beta=0.1)
    with torch.no_grad():
        ours, n = task.loss(policy, batch)
    # fp32 on both sides: TRL's default, bf16, runs the reference model under autocast (3e-3 off in a log-prob)
    args = DPOConfig(output_dir=str(tmp_path / "trl"), beta=0.1, report_to=[], use_cpu=True, bf16=False)
    data = Dataset.from_list([{"prompt": "x", "chosen": "y", "rejected": "z"}])
    trainer = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=data, processing_class=tokenizer)
    trl_batch = {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "completion_mask": (batch["labels"] != IGNORE).long(),
    }
    with torch.no_grad():
        theirs = trainer.compute_loss(policy, trl_batch)
    assert n == 2
    assert (ours / n).item() == pytest.approx(theirs.item(), abs=1e-5)
    assert abs(ours.item() / n - math.log(2)) > 1e-3  # the policy does differ from its reference


def test_orpo_odds_ratio_matches_trl(tiny_lm: str, tmp_path: Path) -> None:
    pytest.importorskip("trl")
    from trl.experimental.orpo import ORPOTrainer

    tokenizer, model = _tokenizer(tiny_lm), _model(tiny_lm, seed=5)
    batch = PairCollator(tokenizer.pad_token_id)(encode_pairs(tokenizer, _pairs(tmp_path), 256))
    with torch.no_grad():
        logps, counts = answer_log_probs(model, batch)
    mean = logps / counts
    ours, _ = orpo_losses(mean[:2], mean[2:], beta=0.1)
    # TRL's method only reads beta and the device from its trainer: a stand-in holds them
    holder = SimpleNamespace(beta=0.1, accelerator=SimpleNamespace(device=torch.device("cpu")))
    ratio_term = ORPOTrainer.odds_ratio_loss(holder, mean[:2], mean[2:])[0]
    assert torch.allclose(ours, -mean[:2] - ratio_term, atol=1e-6)


def test_orpo_task_uses_per_token_means(tiny_lm: str, tmp_path: Path) -> None:
    tokenizer, model = _tokenizer(tiny_lm), _model(tiny_lm, seed=2)
    batch = PairCollator(tokenizer.pad_token_id)(encode_pairs(tokenizer, _pairs(tmp_path), 256))
    task = ORPO(beta=0.1)
    with torch.no_grad():
        total, n = task.loss(model, batch)
        logps, counts = answer_log_probs(model, batch)
    mean = logps / counts
    expected = (-mean[:2] - 0.1 * F.logsigmoid(orpo_losses(mean[:2], mean[2:], 0.1)[1])).sum()
    assert n == 2 and total.item() == pytest.approx(expected.item(), abs=1e-5)
    stats = task.pop_stats()
    assert stats["nll"] == pytest.approx(float(-mean[:2].mean()), abs=1e-5)
    assert task.pop_stats() == {}  # popped: the next step starts afresh


# --- data ------------------------------------------------------------------------------------------


def test_pairs_read_conversational_rows_and_csv_json_cells(tmp_path: Path) -> None:
    rows = [
        {
            "prompt": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
            "chosen": [{"role": "assistant", "content": "hello"}],
            "rejected": "go away",
        }
    ]
    (pair,) = _pairs(tmp_path, rows)
    assert pair.prompt[0] == {"role": "system", "content": "be brief"} and pair.chosen == "hello"
    csv = tmp_path / "pairs.csv"
    csv.write_text(
        'prompt,chosen,rejected\n"[{""role"": ""user"", ""content"": ""你好""}]",您好！,走开\n', encoding="utf-8"
    )
    (pair,) = load_pairs(str(csv), DataConfig(chat=DataConfig().chat))
    assert pair.prompt == [{"role": "user", "content": "你好"}] and pair.rejected == "走开"
    # Parquet keeps a list cell as an array: read like any list (it was refused before)
    import pandas as pd

    parquet = tmp_path / "pairs.parquet"
    pd.DataFrame(
        {"prompt": [[{"role": "user", "content": "你好"}]], "chosen": ["您好！"], "rejected": ["走开"]}
    ).to_parquet(parquet)
    (pair,) = load_pairs(str(parquet), DataConfig())
    assert pair.prompt == [{"role": "user", "content": "你好"}] and pair.chosen == "您好！"


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ({"prompt": "q", "chosen": "", "rejected": "b"}, "empty 'chosen'"),
        ({"prompt": [{"role": "assistant", "content": "a"}], "chosen": "a", "rejected": "b"}, "last turn"),
        ({"prompt": "q", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"}, "one assistant turn"),
    ],
)
def test_bad_pairs_name_the_row(tmp_path: Path, cli, tiny_lm: str, row: dict, needle: str) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "fine", "chosen": "a", "rejected": "b"}) + "\n" + json.dumps(row) + "\n")
    result = cli("train", "--task", "dpo", "--model", tiny_lm, "--train", path, "--output", tmp_path / "run")
    one_error_line(result, "pairs.jsonl: line 2", needle)


def test_missing_columns_and_identical_answers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "q", "answer": "a"}) + "\n")
    with pytest.raises(Exception, match="missing chosen, rejected"):
        load_pairs(str(path), DataConfig())
    rows = [{"prompt": "q", "chosen": "same", "rejected": "same"}, {"prompt": "r", "chosen": "a", "rejected": "b"}]
    with caplog.at_level("WARNING", logger="tunesmith"):
        assert len(_pairs(tmp_path, rows)) == 1
    assert "dropped 1 pairs whose chosen and rejected answers are the same" in caplog.text


def test_pairs_of_one_prompt_stay_in_one_split(tmp_path: Path) -> None:
    rows = [{"prompt": f"question {i % 10}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(100)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    splits, manifest = load_pair_splits(DataConfig(train=str(path), test_size=0.2, validation_size=0.2), seed=0)
    prompts = [{p.prompt[-1]["content"] for p in getattr(splits, s)} for s in ("train", "validation", "test")]
    assert not (prompts[0] & prompts[1] or prompts[0] & prompts[2] or prompts[1] & prompts[2])
    assert sum(manifest["rows"].values()) == 100


# --- whole runs ------------------------------------------------------------------------------------


def test_dpo_lora_run_logs_rewards_and_its_base_is_the_adapter_switched_off(tiny_lm: str, tmp_path: Path, cli) -> None:
    pairs = _write_pairs(tmp_path / "pairs.jsonl")
    run = tmp_path / "dpo"
    args = ["--epochs", "3", "--batch-size", "8", "--lr", "5e-3", "--max-new-tokens", "4", "--method", "lora"]
    result = cli("train", "--task", "dpo", "--model", tiny_lm, "--train", pairs, "--output", run, *args)
    assert result.code == 0, result.err
    assert "reward_accuracy" in result.out and "pair_accuracy" in result.out
    metrics = json.loads((run / "metrics.json").read_text())
    test = metrics["finetuned"]["test"]
    assert test["reward_accuracy"] > 0.5 and test["reward_margin"] > 0  # it learned to prefer "yes, ..."
    assert test["loss"] < math.log(2)
    assert set(metrics["base"]) == {"pair_accuracy", "nll", "pairs"}  # no rewards: the base is its own reference
    steps = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    trained = [s for s in steps if s["type"] == "train"]
    assert all("reward_margin" in s and "reward_accuracy" in s for s in trained)
    assert trained[-1]["reward_margin"] > trained[0]["reward_margin"]
    # evaluate scores the base with the adapter disabled: the same numbers the run measured before training
    result = cli("evaluate", run, "--output", tmp_path / "eval.json")
    assert result.code == 0, result.err
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["base"]["pair_accuracy"] == metrics["base"]["pair_accuracy"]
    assert evaluated["finetuned"]["loss"] == pytest.approx(test["loss"], abs=1e-5)
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 5 and all({"prompt", "reference", "base", "finetuned"} <= set(s) for s in samples)
    result = cli("generate", run, "--prompt", "refund late?", "--max-new-tokens", "3")
    assert result.code == 0 and json.loads(result.out.strip().splitlines()[-1])["prompt"] == "refund late?"
    assert "pair_accuracy" in (run / "report.html").read_text(encoding="utf-8")


def test_orpo_full_run_lowers_the_chosen_nll(tiny_lm: str, tmp_path: Path, cli) -> None:
    pairs = _write_pairs(tmp_path / "pairs.jsonl")
    run = tmp_path / "orpo"
    args = ["--epochs", "3", "--batch-size", "8", "--lr", "5e-3", "--max-new-tokens", "4", "--beta", "0.2"]
    result = cli("train", "--task", "orpo", "--model", tiny_lm, "--train", pairs, "--output", run, *args)
    assert result.code == 0, result.err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["finetuned"]["beta"] == 0.2
    assert metrics["finetuned"]["test"]["nll"] < metrics["base"]["nll"]


def test_beta_only_for_preference_tasks(tiny_model: str, intents_csv: Path, cli, tmp_path: Path) -> None:
    result = cli("train", "--model", tiny_model, "--train", intents_csv, "--output", tmp_path / "r", "--beta", "0.1")
    one_error_line(result, "--beta applies to --task dpo or orpo")


@pytest.mark.parametrize("command", [["advise"], ["data", "inspect"]])
def test_advise_and_data_commands_name_what_they_read(tmp_path: Path, cli, command: list[str]) -> None:
    pairs = _write_pairs(tmp_path / "pairs.jsonl", n=6)
    file_args = ["--train", pairs] if command == ["advise"] else [pairs]
    one_error_line(cli(*command, *file_args, "--task", "dpo"), "answer pairs", "tunesmith train --task dpo")
