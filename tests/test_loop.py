"""Behaviour of the training loop: accumulation, batching, optimizer groups, early stopping,
best-checkpoint restore, bit-exact resume after kill -9, NaN handling and save/reload round trips.

Everything runs on the tiny random BERT of conftest.py, on one CPU thread, in a few seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import conftest
from conftest import INTENTS, write_intents
from tunesmith.config import MethodConfig, ModelConfig, RunConfig, TrainConfig
from tunesmith.data.prepare import prepare_data
from tunesmith.errors import TunesmithError
from tunesmith.evaluate.scores import predict_scores, score_evaluator
from tunesmith.inference import evaluate_file, load_run, predict_texts
from tunesmith.models.loading import apply_method, load_classifier, load_tokenizer
from tunesmith.recipes.classifier import train_run
from tunesmith.tasks.base import Collator, encode_texts, make_examples
from tunesmith.tasks.classification import Classification
from tunesmith.train.checkpoint import load_checkpoint, trainable_state
from tunesmith.train.loop import Trainer, build_optimizer, step_batches

LABELS = sorted(INTENTS)  # what Classification.fit finds: account, refund, shipping
CPU = torch.device("cpu")

# Texts of very different lengths, so that micro-batches are padded very differently.
LONG = " ".join(["my order from last week has still not arrived and nobody answers the phone"] * 6)
TEXTS = [
    ("refund", "refund"),
    (LONG, "shipping"),
    ("cannot log in", "account"),
    ("I want a refund for the broken item that came in a crushed box, " * 3, "refund"),
    ("track my package please", "shipping"),
    ("forgot my password again and the reset mail never comes " * 4, "account"),
    ("ok", "refund"),
    ("delivery is late", "shipping"),
]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One thread: faster than two on a busy 2-core machine, and reductions in a fixed order."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer(tiny_model: str) -> Any:
    return load_tokenizer(tiny_model)


def task() -> Classification:
    return Classification(labels=list(LABELS))


def examples(tokenizer: Any, rows: list[tuple[str, str]]) -> list[dict]:
    ids = encode_texts(tokenizer, [text for text, _ in rows], 128)
    return make_examples(ids, torch.tensor([LABELS.index(label) for _, label in rows]))


def intent_rows(per_class: int, seed: int) -> list[tuple[str, str]]:
    return conftest.intent_rows(per_class, seed, suffixes=("please", "now", ""))


def classifier(tiny_model: str, tokenizer: Any, dropout: float | None = 0.0, seed: int = 0) -> torch.nn.Module:
    """The tiny BERT with a 3-way head, embeddings frozen as `apply_method` decides for it."""
    torch.manual_seed(seed)  # the head is initialised at random: the same seed gives the same head
    model = load_classifier(
        tiny_model, task().model_kwargs(), ModelConfig(name=tiny_model, dropout=dropout), tokenizer.pad_token_id
    )
    return apply_method(model, MethodConfig(), None)


def trainer(
    model: torch.nn.Module,
    tokenizer: Any,
    train: list[dict],
    validation: list[dict],
    run_dir: Path,
    the_task: Classification | None = None,
    **train_cfg: Any,
) -> Trainer:
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig(
        **{"lr": 1e-3, "warmup_ratio": 0.0, "batch_size": 32, "epochs": 3.0, "eval_batch_size": 16, **train_cfg}
    )
    the_task = the_task or task()
    collate = Collator(tokenizer.pad_token_id)
    evaluate = score_evaluator(the_task, validation, collate, cfg.eval_batch_size, CPU)
    return Trainer(model, the_task, train, cfg, run_dir, CPU, collate, evaluate)


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def read_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text(encoding="utf-8").splitlines()]


def run_config(tmp_path: Path, tiny_model: str, train_csv: Path, name: str = "run") -> RunConfig:
    cfg = RunConfig(task="classification", output=str(tmp_path / name))
    cfg.data.train = str(train_csv)
    cfg.model.name = tiny_model
    cfg.eval.baseline = False
    cfg.train.batch_size = 8
    cfg.train.lr = 1e-3
    cfg.train.max_steps = 6
    cfg.train.eval_batch_size = 16
    return cfg


# --- 1. gradient accumulation ---------------------------------------------------------------------


def one_step(
    model: torch.nn.Module,
    tokenizer: Any,
    train: list[dict],
    tmp_path: Path,
    n: int,
    grad_accum: int,
    max_grad_norm: float,
) -> tuple[float, dict, dict]:
    """One optimizer step on train[:n]; returns the loss, the gradients the optimizer saw, the new weights."""
    # lr 1e-5: AdamW's first step is lr * g / (|g| + 1e-8), which turns float noise of 1e-10 on a gradient
    # near 0 into lr * 1e-2 of weight; at 1e-3 that alone exceeds the 1e-6 tolerance on the weights.
    t = trainer(
        model,
        tokenizer,
        train,
        train[:2],
        tmp_path,
        batch_size=8,
        grad_accum=grad_accum,
        max_grad_norm=max_grad_norm,
        lr=1e-5,
    )
    seen: dict[str, torch.Tensor] = {}

    def grab(_opt: Any, _args: Any, _kwargs: Any) -> None:
        seen.update({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})

    t.optimizer.register_step_pre_hook(grab)
    loss, _, _ = t._optimizer_step(list(range(n)), 0)
    return loss, seen, params(model)


def test_gradient_checkpointing_gives_the_same_step(tiny_model: str, tokenizer: Any, tmp_path: Path) -> None:
    train = examples(tokenizer, TEXTS)
    loss, grads, _ = one_step(classifier(tiny_model, tokenizer), tokenizer, train, tmp_path / "a", 8, 1, 1.0)
    model = classifier(tiny_model, tokenizer)
    t = trainer(model, tokenizer, train, train[:2], tmp_path / "b", batch_size=8, lr=1e-5, gradient_checkpointing=True)
    assert model.is_gradient_checkpointing
    seen: dict[str, torch.Tensor] = {}
    t.optimizer.register_step_pre_hook(
        lambda *_: seen.update({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    )
    checkpointed, _, _ = t._optimizer_step(list(range(8)), 0)
    assert checkpointed == pytest.approx(loss, rel=1e-6)
    assert seen.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(seen[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_gradient_checkpointing_refuses_a_model_without_it(tokenizer: Any, tmp_path: Path) -> None:
    with pytest.raises(TunesmithError, match="--gradient-checkpointing: Linear does not support it"):
        trainer(torch.nn.Linear(2, 2), tokenizer, [], [], tmp_path, gradient_checkpointing=True)


@pytest.mark.parametrize(
    ("n", "grad_accum"),
    [(8, 4), (8, 2), (8, 8), (7, 4), (7, 2), (6, 4)],
    ids=["8x4", "8x2", "8x8", "7x4-last-micro-of-1", "7x2-micro-4-3", "6x4-three-micros"],
)
@pytest.mark.parametrize("max_grad_norm", [0.0, 1.0], ids=["no-clip", "clip"])
def test_gradient_accumulation_matches_one_big_batch(
    tiny_model: str, tokenizer: Any, tmp_path: Path, n: int, grad_accum: int, max_grad_norm: float
) -> None:
    train = examples(tokenizer, TEXTS)
    base = classifier(tiny_model, tokenizer)
    start = params(base)
    ref_loss, ref_grads, ref_params = one_step(base, tokenizer, train, tmp_path / "a", n, 1, max_grad_norm)
    acc = classifier(tiny_model, tokenizer)
    assert all(torch.equal(start[k], v) for k, v in params(acc).items())  # the same starting point
    loss, grads, after = one_step(acc, tokenizer, train, tmp_path / "b", n, grad_accum, max_grad_norm)

    # The micro-batches really are padded to different widths (as _optimizer_step splits them).
    micro = -(-n // grad_accum)
    widths = [max(len(ex["input_ids"]) for ex in train[i : i + micro]) for i in range(0, n, micro)]
    assert len(set(widths)) > 1, widths

    # Ground truth, independent of the loop: the mean cross-entropy of the n texts, each run alone, unpadded.
    truth = classifier(tiny_model, tokenizer)
    truth.train()
    total = sum(
        torch.nn.functional.cross_entropy(truth(input_ids=torch.tensor([ex["input_ids"]])).logits, ex["labels"][None])
        for ex in train[:n]
    )
    (total / n).backward()
    truth_grads = {name: p.grad for name, p in truth.named_parameters() if p.grad is not None}

    assert loss == pytest.approx(ref_loss, rel=1e-6)
    assert loss == pytest.approx(total.item() / n, rel=1e-5)
    assert grads.keys() == ref_grads.keys() == truth_grads.keys()
    if max_grad_norm == 0:  # unclipped gradients are exactly the gradient of the mean loss
        for name in grads:
            # fp32 sums in another order miss by a fraction of the largest term summed, not of each element: a
            # token-type gradient sums every token, and one of its small elements missed by 1.3e-8 (4.7e-4 of
            # itself) on an AVX-512 CPU, so the absolute tolerance follows the tensor's largest element.
            atol = max(1e-8, 1e-4 * float(truth_grads[name].abs().max()))
            torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=atol, msg=name)
            torch.testing.assert_close(
                grads[name], truth_grads[name], rtol=1e-4, atol=atol, msg=lambda m, n=name: f"{n}: {m}"
            )
    moved = [k for k in after if (after[k] - start[k]).abs().max() > 5e-6]
    assert len(moved) > 10  # the step moved the weights by more than the tolerance below
    for name in after:
        assert torch.allclose(after[name], ref_params[name], atol=1e-6), name


# --- 2. step_batches -------------------------------------------------------------------------------


def test_step_batches_cover_every_example_once_deterministically() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 120, size=1003).tolist()  # 5 chunks of 50 batches; the last chunk has 203
    bs = 4
    first = step_batches(lengths, bs, seed=7, epoch=0)
    assert first == step_batches(lengths, bs, seed=7, epoch=0)
    flat = [i for batch in first for i in batch]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(1 <= len(b) <= bs for b in first)
    assert sum(len(b) < bs for b in first) == 1  # only one chunk ends on a partial batch
    assert len(first) == -(-len(lengths) // bs)
    # Grouped by length: inside a batch the lengths are sorted (longest first) and close together.
    assert all([lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True) for b in first)
    spread = np.mean([lengths[b[0]] - lengths[b[-1]] for b in first])
    assert spread < 0.1 * (max(lengths) - min(lengths))

    second = step_batches(lengths, bs, seed=7, epoch=1)
    assert second != first
    assert sorted(i for b in second for i in b) == list(range(len(lengths)))
    assert step_batches(lengths, bs, seed=8, epoch=0) != first
    assert [b[0] for b in second][:20] != [b[0] for b in first][:20]  # not just the same steps reordered late


def test_remaining_steps_replays_the_tail_of_the_full_run(tiny_model: str, tokenizer: Any, tmp_path: Path) -> None:
    """What a resume after step k trains is exactly what the uninterrupted run trains after step k."""
    train = examples(tokenizer, intent_rows(7, seed=1))  # 21 examples: 6 steps per epoch, the last of 1
    t = trainer(classifier(tiny_model, tokenizer), tokenizer, train, train[:3], tmp_path, batch_size=4, epochs=2.5)
    full = list(t._remaining_steps(0))
    assert t.steps_per_epoch == 6
    assert len(full) == t.total_steps == 15
    assert full[:6] == step_batches(t.lengths, 4, t.cfg.seed, 0)
    assert full[6:12] == step_batches(t.lengths, 4, t.cfg.seed, 1)
    assert full[12:] == step_batches(t.lengths, 4, t.cfg.seed, 2)[:3]
    for done in range(t.total_steps + 1):
        assert list(t._remaining_steps(done)) == full[done:], done


# --- 3. weight decay groups ------------------------------------------------------------------------


def test_optimizer_groups_skip_decay_on_biases_and_norms_and_leave_frozen_out(tiny_model: str, tokenizer: Any) -> None:
    model = classifier(tiny_model, tokenizer)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"bert.embeddings.word_embeddings.weight"}  # over 2/3 of the tiny model: frozen by default
    opt = build_optimizer(model, TrainConfig(lr=2e-5, weight_decay=0.05))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05
    assert no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    got_decay = {names[id(p)] for p in decay["params"]}
    got_no_decay = {names[id(p)] for p in no_decay["params"]}
    expect_no_decay = {n for n in names.values() if n not in frozen and (n.endswith(".bias") or "LayerNorm" in n)}
    assert got_no_decay == expect_no_decay
    assert got_decay == set(names.values()) - frozen - expect_no_decay
    assert "classifier.weight" in got_decay and "bert.embeddings.LayerNorm.weight" in got_no_decay
    assert not (got_decay | got_no_decay) & frozen
    assert len(decay["params"]) + len(no_decay["params"]) == len(got_decay | got_no_decay)  # no duplicates

    lora = apply_method(classifier(tiny_model, tokenizer), MethodConfig(method="lora"), None)
    lora_opt = build_optimizer(lora, TrainConfig(lr=2e-5))
    lora_names = {id(p): n for n, p in lora.named_parameters()}
    in_groups = {lora_names[id(p)] for g in lora_opt.param_groups for p in g["params"]}
    assert in_groups == {n for n, p in lora.named_parameters() if p.requires_grad}
    assert all("lora_" in n or "classifier" in n for n in in_groups)
    assert {lora_names[id(p)] for p in lora_opt.param_groups[1]["params"]} == {
        n for n in in_groups if n.endswith(".bias")
    }


# --- 4. early stopping and 5. best-checkpoint restore ---------------------------------------------


def scripted_metrics(the_task: Classification, values: list[float], key: str = "macro_f1") -> list[float]:
    """Make the validation metric `key` follow `values`, one per evaluation; returns the values used so far."""
    used: list[float] = []
    real = the_task.metrics

    def metrics(scores: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
        out = real(scores, targets)
        used.append(values[len(used)])
        return {**out, key: used[-1]}

    the_task.metrics = metrics  # type: ignore[method-assign]
    return used


def test_early_stopping_on_a_metric_that_cannot_improve(tiny_model: str, tokenizer: Any, tmp_path: Path) -> None:
    """Ties are not improvements: with patience 1 the run stops at its second evaluation."""
    rows = intent_rows(8, seed=2)
    train, validation = examples(tokenizer, rows[:16]), examples(tokenizer, rows[16:])
    model = classifier(tiny_model, tokenizer)
    run_dir = tmp_path / "run"
    t = trainer(
        model, tokenizer, train, validation, run_dir, batch_size=4, lr=1e-12, max_steps=10, eval_every=1, patience=1
    )
    state = t.fit()
    assert state.stopped_early
    assert state.step == 2 and state.best_step == 1
    evals = [r for r in read_log(run_dir) if r["type"] == "eval"]
    assert [r["step"] for r in evals] == [1, 2]
    assert evals[0]["macro_f1"] == evals[1]["macro_f1"]  # the metric did not move: lr 1e-12
    assert [r["best"] for r in evals] == [True, False]
    assert evals[1]["stopped_early"]
    assert [r["step"] for r in read_log(run_dir) if r["type"] == "train"] == [1, 2]
    peaks = [r["peak_rss_mb"] for r in read_log(run_dir) if r["type"] == "train"]
    assert 100 < peaks[0] <= peaks[1]  # this process's peak so far: at least torch's own, never falling
    assert all("gpu_peak_mb" not in r for r in read_log(run_dir))  # a CPU run has no GPU memory to report

    best = load_file(str(run_dir / "checkpoints" / "best" / "trainable.safetensors"))
    last = load_file(str(run_dir / "checkpoints" / "last" / "trainable.safetensors"))
    now = trainable_state(model)
    assert best.keys() == now.keys()
    assert all(torch.equal(best[k], now[k]) for k in now)  # the model ends on the best checkpoint
    assert not all(torch.equal(last[k], now[k]) for k in now)  # ... which is not the last step's weights
    last_state = json.loads((run_dir / "checkpoints" / "last" / "state.json").read_text())
    assert last_state["done"] and last_state["stopped_early"] and last_state["step"] == 2
    assert json.loads((run_dir / "checkpoints" / "best" / "state.json").read_text())["step"] == 1


def test_patience_counts_evaluations_since_the_last_improvement(
    tiny_model: str, tokenizer: Any, tmp_path: Path
) -> None:
    rows = intent_rows(6, seed=3)
    train, validation = examples(tokenizer, rows[:12]), examples(tokenizer, rows[12:])
    the_task = task()
    used = scripted_metrics(the_task, [0.5, 0.4, 0.6, 0.6, 0.3, 0.9, 0.9])
    t = trainer(
        classifier(tiny_model, tokenizer),
        tokenizer,
        train,
        validation,
        tmp_path / "run",
        the_task,
        batch_size=4,
        max_steps=7,
        eval_every=1,
        patience=2,
    )
    state = t.fit()
    assert used == [0.5, 0.4, 0.6, 0.6, 0.3]  # 0.4 bad, 0.6 resets, then a tie and a drop: patience 2 is spent
    assert state.stopped_early and state.step == 5 and state.best_step == 3 and state.best_metric == 0.6


def test_fit_restores_the_best_checkpoint_not_the_last_step(tiny_model: str, tokenizer: Any, tmp_path: Path) -> None:
    rows = intent_rows(6, seed=4)
    train, validation = examples(tokenizer, rows[:12]), examples(tokenizer, rows[12:])
    model = classifier(tiny_model, tokenizer, dropout=None)
    the_task = task()
    scripted_metrics(the_task, [0.2, 0.7, 0.4, 0.5])  # best at step 2
    run_dir = tmp_path / "run"
    t = trainer(model, tokenizer, train, validation, run_dir, the_task, batch_size=4, max_steps=4, eval_every=1)
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    evaluate = t._evaluate

    def snapshot_then_evaluate(state: Any, log: Any) -> None:
        snapshots[state.step] = {k: v.clone() for k, v in trainable_state(model).items()}  # views on CPU
        evaluate(state, log)

    t._evaluate = snapshot_then_evaluate  # type: ignore[method-assign]
    state = t.fit()
    assert state.best_step == 2 and state.step == 4 and not state.stopped_early
    now = trainable_state(model)
    best = load_file(str(run_dir / "checkpoints" / "best" / "trainable.safetensors"))
    assert all(torch.equal(now[k], best[k]) for k in now)
    assert all(torch.equal(now[k], snapshots[2][k]) for k in now)
    assert not torch.equal(now["classifier.weight"], snapshots[4]["classifier.weight"])
    best_state = json.loads((run_dir / "checkpoints" / "best" / "state.json").read_text())
    assert best_state.pop("files").keys() == {"trainable.safetensors"}  # with its size and sha256
    assert best_state == {"step": 2, "macro_f1": 0.7}


# --- 6. resume after kill -9 ----------------------------------------------------------------------


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "TUNESMITH_HOME": str(tmp_path / "home"),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


def start(cmd: list[str], env: dict[str, str], logs: Path) -> subprocess.Popen:
    logs.parent.mkdir(parents=True, exist_ok=True)
    with logs.open("wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


def checkpoint_step(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / "checkpoints" / "last" / "state.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return -1  # not written yet, or swapped out at this very moment


def logged_step(run_dir: Path) -> int:
    """The last train step in log.jsonl (which the run is appending to right now)."""
    try:
        lines = (run_dir / "log.jsonl").read_text(encoding="utf-8").splitlines()[-3:]
    except OSError:
        return -1
    steps = [-1]
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line half written
        if record.get("type") == "train":
            steps.append(record["step"])
    return max(steps)


def kill_after(proc: subprocess.Popen, run_dir: Path, step: int, limit_s: float = 120) -> bool:
    """SIGKILL the run once it has logged `step`; False if it finished first."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if logged_step(run_dir) >= step:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
            return proc.returncode == -signal.SIGKILL
        if proc.poll() is not None:
            return False
        time.sleep(0.002)
    proc.kill()
    raise AssertionError(f"the run did not reach step {step} in {limit_s} s")


def finished(proc: subprocess.Popen, logs: Path) -> None:
    assert proc.wait(300) == 0, logs.read_text(errors="replace")[-3000:]


def test_resume_after_kill_9_is_bit_exact(tiny_model: str, tmp_path: Path) -> None:
    data = write_intents(tmp_path / "intents.csv", per_class=100)  # 300 rows: 240 train, 60 steps per epoch
    env = cli_env(tmp_path)
    killed_dir, ref_dir = tmp_path / "killed", tmp_path / "reference"
    for epochs in (3, 12):  # a longer run when the first one was too quick to catch in the middle
        # --no-group-split keeps the plain 240-row train split (grouping would move the repeated texts).
        flags = f"--epochs {epochs} --batch-size 4 --checkpoint-every 5 --eval-every 25 --lr 1e-3 --no-baseline"
        flags += " --no-group-split"
        cmd = [sys.executable, "-m", "tunesmith.cli", "train", "--model", tiny_model, "--train", str(data)]
        cmd += flags.split()
        # The uninterrupted reference runs beside the one to kill (2 cores, one thread each).
        ref = start([*cmd, "--output", str(ref_dir)], env, tmp_path / "logs" / f"reference-{epochs}.txt")
        proc = start([*cmd, "--output", str(killed_dir)], env, tmp_path / "logs" / f"killed-{epochs}.txt")
        # After the evaluation at 25 (best_metric and the best checkpoint are part of what resumes) and
        # between two checkpoints (30 and 35), so the resume also drops log lines it trains again.
        if kill_after(proc, killed_dir, 32):
            break
        ref.kill()
        ref.wait(30)
        shutil.rmtree(killed_dir)
        shutil.rmtree(ref_dir, ignore_errors=True)
    else:
        pytest.fail("the run always finished before it could be killed")
    assert proc.returncode == -signal.SIGKILL
    killed_at = checkpoint_step(killed_dir)
    assert 30 <= killed_at < 60 * epochs
    assert not (killed_dir / "metrics.json").exists()
    kept = json.loads((killed_dir / "checkpoints" / "last" / "state.json").read_text())["log_lines"]
    before = read_log(killed_dir)[:kept]
    assert [r["step"] for r in before if r["type"] == "train"] == list(range(1, killed_at + 1))
    logged = sum(r["type"] == "train" for r in read_log(killed_dir))
    print(f"killed at step {logged} of {60 * epochs}; last checkpoint at step {killed_at}")

    resumed = start([*cmd, "--output", str(killed_dir), "--resume"], env, tmp_path / "logs" / "resumed.txt")
    finished(ref, tmp_path / "logs" / f"reference-{epochs}.txt")
    finished(resumed, tmp_path / "logs" / "resumed.txt")

    got, want = (json.loads((d / "metrics.json").read_text()) for d in (killed_dir, ref_dir))
    assert got["finetuned"]["steps"] == want["finetuned"]["steps"] == 60 * epochs
    for key in ("validation", "test", "best_step", "steps", "stopped_early"):
        assert got["finetuned"][key] == want["finetuned"][key], key

    got_log, want_log = read_log(killed_dir), read_log(ref_dir)
    # The resume continued from the checkpoint: the lines before it are the killed run's own (their
    # examples_per_s timings would differ had the run started over), and nothing is logged twice.
    assert got_log[:kept] == before
    train_got = [(r["step"], r["loss"], r["lr"]) for r in got_log if r["type"] == "train"]
    train_want = [(r["step"], r["loss"], r["lr"]) for r in want_log if r["type"] == "train"]
    assert [s for s, _, _ in train_got] == list(range(1, 60 * epochs + 1))  # each step logged once
    diffs = [(s, a, b) for (s, a, _), (_, b, _) in zip(train_got, train_want, strict=True) if a != b]
    assert not diffs, f"{len(diffs)} losses differ, first {diffs[:3]}"
    assert train_got == train_want
    untimed = [{k: v for k, v in r.items() if k not in ("seconds", "time", "peak_rss_mb")} for r in got_log + want_log]
    assert [r for r in untimed[: len(got_log)] if r["type"] == "eval"] == [
        r for r in untimed[len(got_log) :] if r["type"] == "eval"
    ]

    got_w, want_w = (load_file(str(d / "model" / "model.safetensors")) for d in (killed_dir, ref_dir))
    assert got_w.keys() == want_w.keys()
    assert all(torch.equal(got_w[k], want_w[k]) for k in want_w)

    for run_dir in (killed_dir, ref_dir):
        leftovers = [p.name for p in (run_dir / "checkpoints").iterdir() if p.suffix in (".tmp", ".old")]
        assert not leftovers
        assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best", "last"]
        assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob(".*.tmp"))


# --- 7. NaN loss -----------------------------------------------------------------------------------


def test_nan_loss_stops_with_a_resumable_checkpoint(
    tiny_model: str, intents_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = run_config(tmp_path, tiny_model, intents_csv)
    cfg.train.checkpoint_every = 1
    calls = []
    real_loss = Classification.loss

    def loss(self: Classification, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        calls.append(1)
        value, n = real_loss(self, model, batch)
        return (value * float("nan") if len(calls) == 3 else value), n

    monkeypatch.setattr(Classification, "loss", loss)
    with pytest.raises(TunesmithError) as caught:
        train_run(cfg)
    message = str(caught.value)
    assert "nan" in message and "step 3" in message and "--resume" in message
    run_dir = Path(cfg.output)
    assert str(run_dir / "checkpoints" / "last") in message
    assert len(calls) == 3 and not (run_dir / "metrics.json").exists()

    last = run_dir / "checkpoints" / "last"
    state = json.loads((last / "state.json").read_text())
    assert state["step"] == 2 < 3
    saved = load_file(str(last / "trainable.safetensors"))
    assert all(torch.isfinite(v).all() for v in saved.values())
    # The checkpoint loads into a fresh model, optimizer and scheduler.
    tok = load_tokenizer(tiny_model)
    fresh = classifier(tiny_model, tok, dropout=None)
    t = trainer(fresh, tok, examples(tok, TEXTS), examples(tok, TEXTS[:2]), tmp_path / "scratch", max_steps=6)
    assert load_checkpoint(last, fresh, t.optimizer, t.scheduler)["step"] == 2
    assert all(torch.equal(saved[k], v) for k, v in trainable_state(fresh).items())
    assert t.scheduler.last_epoch == 2
    assert [r["step"] for r in read_log(run_dir) if r["type"] == "train"] == [1, 2]

    # Following the message's advice works: resume with a sane loss and finish the run.
    monkeypatch.setattr(Classification, "loss", real_loss)
    metrics = train_run(cfg, resume=True)
    assert metrics["finetuned"]["steps"] == 6
    assert [r["step"] for r in read_log(run_dir) if r["type"] == "train"] == [1, 2, 3, 4, 5, 6]


# --- 8. save / reload round trips -------------------------------------------------------------------

PROBE_TEXTS = ["where is my parcel", "I want my money back now", "cannot log in", LONG, "ok", "password reset"]


def train_and_capture(cfg: RunConfig, monkeypatch: pytest.MonkeyPatch) -> torch.nn.Module:
    """Run train_run and return the in-memory model it saved (the model at the end of training)."""
    import tunesmith.recipes.classifier as run_module

    captured = []
    real_save = run_module.save_model

    def save(model: torch.nn.Module, tok: Any, run_dir: Path) -> None:
        captured.append(model)
        real_save(model, tok, run_dir)

    monkeypatch.setattr(run_module, "save_model", save)
    train_run(cfg)
    assert len(captured) == 1
    return captured[0]


def in_memory_scores(model: torch.nn.Module, tokenizer: Any, texts: list[str]) -> np.ndarray:
    ex = make_examples(encode_texts(tokenizer, texts, 128), None)
    return predict_scores(model, task(), ex, Collator(tokenizer.pad_token_id), 4, CPU)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_saved_run_reloads_to_identical_predictions(
    tiny_model: str,
    tokenizer: Any,
    intents_csv: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
) -> None:
    cfg = run_config(tmp_path, tiny_model, intents_csv)
    cfg.method.method = method
    model = train_and_capture(cfg, monkeypatch)
    run_dir = Path(cfg.output)
    expected = in_memory_scores(model, tokenizer, PROBE_TEXTS)
    untrained = classifier(tiny_model, tokenizer, dropout=None, seed=cfg.train.seed)  # the head train_run starts from
    base = in_memory_scores(untrained, tokenizer, PROBE_TEXTS)
    assert not np.allclose(expected, base, atol=1e-4)  # training moved the predictions (else the test is void)

    # The model at the end of training is the best checkpoint's.
    best = load_file(str(run_dir / "checkpoints" / "best" / "trainable.safetensors"))
    now = trainable_state(model)
    assert best.keys() == now.keys() and all(torch.equal(best[k], now[k]) for k in now)

    run = load_run(run_dir, device="cpu")
    reloaded = run.scores(PROBE_TEXTS)
    assert reloaded.shape == (len(PROBE_TEXTS), 3)
    np.testing.assert_allclose(reloaded, expected, atol=1e-6, rtol=0)
    described = predict_texts(run, PROBE_TEXTS)
    assert [d["label"] for d in described] == [LABELS[i] for i in expected.argmax(1)]
    for d, row in zip(described, expected, strict=True):
        assert list(d["probs"]) == LABELS
        np.testing.assert_allclose(list(d["probs"].values()), row, atol=1e-6, rtol=0)

    # The reloaded run scores the run's own test split exactly as metrics.json says.
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["finetuned"]["method"] == method
    test_csv = tmp_path / "test_split.csv"
    prepare_data(cfg.data, cfg.task, cfg.train.seed).splits.test.to_csv(test_csv, index=False)
    recomputed = evaluate_file(run, str(test_csv))
    for key in ("accuracy", "macro_f1"):
        assert recomputed[key] == pytest.approx(metrics["finetuned"]["test"][key], abs=1e-12), key

    files = {p.name for p in (run_dir / "model").iterdir()}
    if method == "lora":
        assert {"adapter_config.json", "adapter_model.safetensors"} <= files
        assert "model.safetensors" not in files
        from peft import PeftModel
        from transformers import AutoModelForSequenceClassification

        torch.manual_seed(123)  # a different random head: the adapter file must bring the trained one
        fresh = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=len(LABELS))
        peft_model = PeftModel.from_pretrained(fresh, run_dir / "model")
        np.testing.assert_allclose(in_memory_scores(peft_model, tokenizer, PROBE_TEXTS), expected, atol=1e-6, rtol=0)
    else:
        assert "model.safetensors" in files
        assert "adapter_config.json" not in files


# --- bugs found while writing these tests -----------------------------------------------------------


def test_resuming_an_early_stopped_run_trains_no_further(tiny_model: str, tokenizer: Any, tmp_path: Path) -> None:
    """A run killed after fit() returned (while predicting or saving) is resumed: nothing is left to train.

    Fails: fit() takes one more optimizer step before it looks at the restored `stopped_early`.
    """
    rows = intent_rows(6, seed=3)
    train, validation = examples(tokenizer, rows[:12]), examples(tokenizer, rows[12:])
    run_dir = tmp_path / "run"
    kwargs = {"batch_size": 4, "max_steps": 9, "eval_every": 1, "patience": 1, "lr": 1e-12}
    first = trainer(classifier(tiny_model, tokenizer), tokenizer, train, validation, run_dir, **kwargs).fit()
    assert first.stopped_early and first.step == 2
    log_before = (run_dir / "log.jsonl").read_text()

    model = classifier(tiny_model, tokenizer)
    again = trainer(model, tokenizer, train, validation, run_dir, **kwargs).fit(resume=True)
    assert again.stopped_early and again.best_step == 1
    assert again.step == 2, f"the resumed run trained on to step {again.step}"
    assert (run_dir / "log.jsonl").read_text() == log_before


def test_nan_message_names_a_checkpoint_only_when_there_is_one(
    tiny_model: str, tokenizer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the default --checkpoint-every 0, a NaN before the first evaluation leaves no checkpoint.

    Fails: the message still says "The last good checkpoint is in .../last", a folder that does not exist.
    """
    rows = intent_rows(6, seed=5)
    train, validation = examples(tokenizer, rows[:12]), examples(tokenizer, rows[12:])
    the_task = task()
    real_loss = the_task.loss
    monkeypatch.setattr(the_task, "loss", lambda model, batch: (real_loss(model, batch)[0] * float("nan"), 4))
    run_dir = tmp_path / "run"
    t = trainer(
        classifier(tiny_model, tokenizer), tokenizer, train, validation, run_dir, the_task, batch_size=4, epochs=1
    )
    with pytest.raises(TunesmithError, match="step 1") as caught:
        t.fit()
    last = run_dir / "checkpoints" / "last"
    assert not last.exists()
    assert str(last) not in str(caught.value), str(caught.value)


def test_resume_survives_a_kill_between_the_two_renames_of_a_checkpoint(
    tiny_model: str, tokenizer: Any, tmp_path: Path
) -> None:
    """replace_dir moves last -> last.old, then last.tmp -> last: a kill -9 between the two leaves no `last`.

    Fails: the resume does not look at last.tmp (complete) or last.old, and silently starts over from step 0.
    """
    rows = intent_rows(6, seed=6)
    train, validation = examples(tokenizer, rows[:12]), examples(tokenizer, rows[12:])
    run_dir = tmp_path / "run"
    kwargs = {"batch_size": 4, "max_steps": 6, "eval_every": 3, "checkpoint_every": 1}
    t = trainer(classifier(tiny_model, tokenizer), tokenizer, train, validation, run_dir, **kwargs)
    checkpoint = t._checkpoint

    def checkpoint_then_die(state: Any, log: Any, **kwargs: Any) -> None:
        checkpoint(state, log, **kwargs)
        if state.step == 4:
            raise KeyboardInterrupt  # killed right after step 4's checkpoint

    t._checkpoint = checkpoint_then_die  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        t.fit()
    ckpt = run_dir / "checkpoints"
    # The disk as the next save_checkpoint leaves it between its two os.replace calls (last.tmp aside):
    os.replace(ckpt / "last", ckpt / "last.old")
    assert json.loads((ckpt / "last.old" / "state.json").read_text())["step"] == 4

    resumed = trainer(classifier(tiny_model, tokenizer), tokenizer, train, validation, run_dir, **kwargs)
    trained = []
    step = resumed._optimizer_step

    def counted(step_ids: list[int], done: int) -> tuple[float, float | None, float]:
        trained.append(done + 1)
        return step(step_ids, done)

    resumed._optimizer_step = counted  # type: ignore[method-assign]
    state = resumed.fit(resume=True)
    assert state.step == 6
    assert trained == [5, 6], f"the resume trained steps {trained}: it started over"
    assert [r["step"] for r in read_log(run_dir) if r["type"] == "train"] == [1, 2, 3, 4, 5, 6]


def test_the_chosen_metric_sets_the_direction_and_nan_never_wins(
    tiny_model: str, tokenizer: Any, tmp_path: Path
) -> None:
    """A bug took the direction from the task: --metric r2 on regression kept the worst checkpoint."""
    rows = intent_rows(6, seed=5)
    train, validation = examples(tokenizer, rows[:12]), examples(tokenizer, rows[12:])
    the_task = task()
    scripted_metrics(the_task, [float("nan"), 0.9, 0.5, 0.7], key="rmse")
    t = trainer(
        classifier(tiny_model, tokenizer),
        tokenizer,
        train,
        validation,
        tmp_path / "run",
        the_task,
        batch_size=4,
        max_steps=4,
        eval_every=1,
        metric="rmse",
    )
    state = t.fit()
    assert state.best_metric == 0.5 and state.best_step == 3  # lower is better for rmse; NaN at step 1 lost


def test_tied_weights_enter_the_optimizer_once() -> None:
    from transformers import T5Config, T5ForConditionalGeneration

    model = T5ForConditionalGeneration(T5Config(vocab_size=50, d_model=8, d_ff=16, d_kv=4, num_layers=1, num_heads=2))
    params = [p for g in build_optimizer(model, TrainConfig(lr=2e-5)).param_groups for p in g["params"]]
    assert len(params) == len({id(p) for p in params}) == len(list(model.parameters()))
