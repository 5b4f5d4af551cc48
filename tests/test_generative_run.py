"""End to end on tiny random models: sft and seq2seq train, score base beside fine-tuned, generate, export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from tunesmith.cli import main
from tunesmith.config import RunConfig
from tunesmith.errors import TunesmithError
from tunesmith.inference import load_generative_run
from tunesmith.recipes.generative import train_generative

PAIRS = [
    ("hello how are you", "I am fine, thank you"),
    ("what is the capital of France?", "Paris is the capital."),
    ("translate to English: 我喜欢这本书", "I like this book"),
    ("你好", "你好，今天天气很好。"),
]


def write_chats(path: Path, n: int = 40) -> Path:
    rows = [
        {"messages": [{"role": "user", "content": f"{q} {i}"}, {"role": "assistant", "content": a}]}
        for i in range(n)
        for q, a in [PAIRS[i % len(PAIRS)]]
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def write_pairs(path: Path, n: int) -> Path:
    import pandas as pd

    rows = [(f"{q} {i}", a) for i in range(n) for q, a in [PAIRS[i % len(PAIRS)]]]
    pd.DataFrame(rows, columns=["src", "tgt"]).to_csv(path, index=False)
    return path


def sft_config(tiny_lm: str, tmp_path: Path, **method) -> RunConfig:
    cfg = RunConfig(task="sft", output=str(tmp_path / "run"))
    cfg.data.train = str(write_chats(tmp_path / "chats.jsonl"))
    cfg.data.max_length = 64
    cfg.model.name = tiny_lm
    cfg.method.method = method.get("method", "lora")
    cfg.train.epochs, cfg.train.lr, cfg.train.batch_size, cfg.train.eval_batch_size = 3, 5e-3, 8, 8
    cfg.eval.max_new_tokens = 8
    return cfg


def test_sft_lora_run_end_to_end(tiny_lm: str, tmp_path: Path) -> None:
    cfg = sft_config(tiny_lm, tmp_path)
    cfg.data.chat.packing = True
    metrics = train_generative(cfg)
    run = Path(cfg.output)
    for name in ("config.yaml", "metrics.json", "samples.jsonl", "log.jsonl", "model/adapter_model.safetensors"):
        assert (run / name).is_file(), name
    base, tuned = metrics["base"], metrics["finetuned"]["test"]
    assert tuned["perplexity"] < base["perplexity"], "training on the answers must lower their perplexity"
    assert set(tuned["generation"]) >= {"bleu", "chrf", "rouge1", "rouge2", "rougeL", "exact_match", "n"}
    assert tuned["generation"]["n"] == metrics["finetuned"]["test"]["generation"]["n"] > 0
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    assert samples and {"prompt", "reference", "base", "finetuned"} <= set(samples[0])
    # The saved tokenizer carries the training template, so generation uses the same one.
    loaded = load_generative_run(run, "cpu")
    assert loaded.lm.tokenizer.chat_template == AutoTokenizer.from_pretrained(tiny_lm).chat_template
    answers = loaded.lm.generate([[{"role": "user", "content": "hello how are you 1"}]], 1, 8)
    assert isinstance(answers[0], str)


def test_cli_generate_evaluate_and_export_merge(tiny_lm: str, tmp_path: Path, capsys) -> None:
    cfg = sft_config(tiny_lm, tmp_path)
    train_generative(cfg)
    run = cfg.output
    assert main(["generate", run, "--prompt", "hello how are you 3", "--max-new-tokens", "5"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["prompt"] == "hello how are you 3" and isinstance(out["answer"], str)
    test_file = write_chats(tmp_path / "test.jsonl", 8)
    assert main(["evaluate", run, "--test", str(test_file)]) == 0
    printed = capsys.readouterr().out
    assert "base model" in printed and "fine-tuned" in printed
    merged = tmp_path / "merged"
    assert main(["export", run, "--output", str(merged)]) == 0
    capsys.readouterr()
    assert main(["generate", str(merged), "--prompt", "hello how are you 3", "--max-new-tokens", "5"]) == 0
    from_export = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert from_export["answer"] == out["answer"]  # the export answers as the run does (greedy)
    assert main(["evaluate", str(merged)]) == 0  # its own recorded test split, carried from the run
    assert "fine-tuned" in capsys.readouterr().out
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(merged).eval()
    loaded = load_generative_run(run, "cpu")
    ids = torch.tensor([loaded.lm.prompt([{"role": "user", "content": "你好 1"}])])
    with torch.no_grad():
        torch.testing.assert_close(
            plain(input_ids=ids).logits, loaded.lm.model(input_ids=ids).logits, atol=1e-5, rtol=1e-4
        )


def test_trained_model_stops_at_eos(tiny_lm: str, tmp_path: Path) -> None:
    """Every answer ends with EOS in training, so a trained model stops instead of running to max_new_tokens."""
    cfg = sft_config(tiny_lm, tmp_path, method="full")
    cfg.train.epochs, cfg.train.lr = 30, 3e-3
    cfg.eval.baseline = False
    train_generative(cfg)
    lm = load_generative_run(cfg.output, "cpu").lm
    prompt = lm.prompt([{"role": "user", "content": "hello how are you 5"}])
    out = lm.model.generate(
        torch.tensor([prompt]),
        max_new_tokens=40,
        do_sample=False,
        eos_token_id=lm.tokenizer.eos_token_id,
        pad_token_id=lm.tokenizer.pad_token_id,
    )
    new = out[0, len(prompt) :].tolist()
    assert lm.tokenizer.eos_token_id in new and len(new) < 40
    assert lm.tokenizer.decode(new, skip_special_tokens=True).strip() == "I am fine, thank you"


def test_packing_with_prompt_tuning_is_refused(tiny_lm: str, tmp_path: Path) -> None:
    cfg = sft_config(tiny_lm, tmp_path, method="prompt_tuning")
    cfg.data.chat.packing = True
    with pytest.raises(TunesmithError, match="--packing cannot combine"):
        train_generative(cfg)


def test_encoder_for_sft_is_refused(tiny_model: str, tmp_path: Path) -> None:
    cfg = sft_config(tiny_model, tmp_path)
    with pytest.raises(TunesmithError, match="not a causal LM"):
        train_generative(cfg)


def test_seq2seq_tiny_t5_end_to_end(tiny_t5: str, tmp_path: Path) -> None:
    cfg = RunConfig(task="seq2seq", output=str(tmp_path / "run"))
    cfg.data.train = str(write_pairs(tmp_path / "pairs.csv", 40))
    cfg.data.chat.source_column, cfg.data.chat.target_column = "src", "tgt"
    cfg.model.name = tiny_t5
    cfg.method.method = "full"
    cfg.train.epochs, cfg.train.lr, cfg.train.batch_size = 5, 3e-3, 8
    cfg.eval.max_new_tokens = 8
    metrics = train_generative(cfg)
    assert metrics["finetuned"]["test"]["perplexity"] < metrics["base"]["perplexity"]
    assert metrics["finetuned"]["test"]["generation"]["n"] > 0


def test_seq2seq_warm_started_from_an_encoder(tiny_model: str, tmp_path: Path) -> None:
    cfg = RunConfig(task="seq2seq", output=str(tmp_path / "run"))
    cfg.data.train = str(write_pairs(tmp_path / "pairs.csv", 40))
    cfg.data.chat.source_column, cfg.data.chat.target_column = "src", "tgt"
    cfg.model.name = tiny_model
    cfg.method.method = "full"
    cfg.train.epochs, cfg.train.lr, cfg.train.batch_size = 3, 3e-3, 8
    cfg.eval.max_new_tokens = 6
    metrics = train_generative(cfg)
    assert metrics["finetuned"]["test"]["perplexity"] < metrics["base"]["perplexity"]


def test_peft_on_a_warm_started_seq2seq_is_refused(tiny_model: str, tmp_path: Path) -> None:
    cfg = RunConfig(task="seq2seq", output=str(tmp_path / "run"))
    cfg.data.train = str(write_pairs(tmp_path / "pairs.csv", 40))
    cfg.model.name = tiny_model
    cfg.method.method = "lora"
    with pytest.raises(TunesmithError, match="use --method full"):
        train_generative(cfg)


def test_generate_fills_the_runs_prompt_template(tiny_lm: str, tmp_path: Path) -> None:
    from tunesmith.inference import GenerativeRun

    cfg = RunConfig(task="sft")
    cfg.data.chat.prompt_template = "Translate to English: {src}"
    run = GenerativeRun(cfg, lm=None)  # type: ignore[arg-type]
    assert run.user_turn("你好") == {"role": "user", "content": "Translate to English: 你好"}
    cfg.data.chat.prompt_template = "{a} and {b}"
    with pytest.raises(TunesmithError, match="takes 2 columns"):
        run.user_turn("x")


def test_resume_of_a_finished_run_reuses_checkpoint_and_baseline(tiny_lm: str, tmp_path: Path) -> None:
    cfg = sft_config(tiny_lm, tmp_path)
    first = train_generative(cfg)
    again = train_generative(cfg, resume=True)
    assert again["base"] == first["base"]  # from baseline.json, not recomputed
    assert again["finetuned"]["steps"] == first["finetuned"]["steps"]
    assert again["finetuned"]["test"]["loss"] == pytest.approx(first["finetuned"]["test"]["loss"], abs=1e-6)


def test_prompt_tuning_run_generates_one_row_at_a_time(tiny_lm: str, tmp_path: Path) -> None:
    """Virtual tokens sit before left padding in a batch, so prompt-learning runs generate row by row."""
    cfg = sft_config(tiny_lm, tmp_path, method="prompt_tuning")
    cfg.method.num_virtual_tokens = 4
    metrics = train_generative(cfg)
    assert metrics["finetuned"]["test"]["perplexity"] < metrics["base"]["perplexity"]
    lm = load_generative_run(cfg.output, "cpu").lm
    histories = [[{"role": "user", "content": q}] for q in ("hello how are you 1", "你好 2", "what is the capital?")]
    together = lm.generate(histories, 3, 6)
    alone = [lm.generate([h], 1, 6)[0] for h in histories]
    assert together == alone


def test_max_length_is_capped_at_the_models_positions(tiny_model: str, tmp_path: Path, caplog) -> None:
    """The tiny BERT has 128 positions: the 1024 default for seq2seq would crash its embeddings on long text."""
    import pandas as pd

    rows = [("word " * 300 + str(i), "short answer") for i in range(30)]
    pd.DataFrame(rows, columns=["src", "tgt"]).to_csv(tmp_path / "long.csv", index=False)
    cfg = RunConfig(task="seq2seq", output=str(tmp_path / "run"))
    cfg.data.train = str(tmp_path / "long.csv")
    cfg.model.name = tiny_model
    cfg.train.max_steps, cfg.eval.max_new_tokens, cfg.eval.generate_max_rows = 1, 2, 2
    train_generative(cfg)
    assert "covers 128 positions: --max-length lowered from 1024" in caplog.text
    assert "max_length: 128" in (tmp_path / "run" / "config.yaml").read_text()


def test_cli_chat_keeps_history_and_resets(tiny_lm: str, tmp_path: Path, monkeypatch, capsys) -> None:
    from tunesmith.evaluate.generative import LanguageModel as Model

    cfg = sft_config(tiny_lm, tmp_path)
    cfg.eval.baseline = False
    train_generative(cfg)
    seen: list[int] = []
    original = Model.generate

    def spy(self, histories, *args, **kwargs):
        seen.append(len(histories[0]))
        return original(self, histories, *args, **kwargs)

    monkeypatch.setattr(Model, "generate", spy)
    lines = iter(["hello how are you 1", "你好 2", "/reset", "hello again", "/exit"])
    monkeypatch.setattr("builtins.input", lambda _prompt: next(lines))
    assert main(["chat", cfg.output, "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.count("model> ") == 3
    assert seen == [1, 3, 1]  # the second question sees the first exchange; /reset forgets it
