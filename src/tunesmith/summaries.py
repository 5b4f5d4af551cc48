"""What a finished run prints: base beside fine-tuned on the same test split, as text."""

from __future__ import annotations

import json
from typing import Any

_SCORE_KEYS = (
    "accuracy",
    "macro_f1",
    "micro_f1",
    "rmse",
    "mae",
    "r2",
    "spearman",
    "entity_precision",
    "entity_recall",
    "entity_f1",
    "token_accuracy",
)
_GENERATION_KEYS = ("perplexity", "bleu", "chrf", "rougeL", "exact_match")
_PREFERENCE_KEYS = ("pair_accuracy", "reward_accuracy", "reward_margin", "nll")


def summary(metrics: dict[str, Any]) -> str:
    """The table of any run's metrics.json: a classifier's or a generative run's."""
    test = metrics["finetuned"]["test"]
    return generative_summary(metrics) if "perplexity" in test or "pairs" in test else score_summary(metrics)


def score_summary(metrics: dict[str, Any]) -> str:
    rows = [(name, metrics[name]) for name in ("zero_shot", "linear_probe", "finetuned") if name in metrics]
    keys = [k for k in _SCORE_KEYS if k in metrics["finetuned"]["test"]]
    labels = {
        "zero_shot": "base model, zero-shot",
        "linear_probe": "base model + linear probe",
        "finetuned": f"fine-tuned ({metrics['finetuned']['method']})",
    }
    distill = metrics.get("distill") or {}
    if distill.get("teacher_test") and all(k in distill["teacher_test"] for k in keys):
        # the teacher was scored on these same rows: the student's price in points, beside it
        rows.insert(len(rows) - 1, ("teacher", {"test": distill["teacher_test"]}))
        labels["teacher"] = f"teacher ({_size(distill['teacher_parameters'])})"
        how = "distilled" if distill.get("alpha") else "labels only"
        labels["finetuned"] = f"student, {how} ({_size(distill['student_parameters'])})"
    width = max(len(labels[name]) for name, _ in rows)
    widths = [max(9, len(k)) for k in keys]  # entity_precision is wider than a number
    lines = ["", f"{'test split':<{width}}  " + "  ".join(f"{k:>{w}}" for k, w in zip(keys, widths, strict=True))]
    lines += [
        f"{labels[name]:<{width}}  " + "  ".join(f"{m['test'][k]:>{w}.4f}" for k, w in zip(keys, widths, strict=True))
        for name, m in rows
    ]
    if "base" in metrics:
        lines.append(f"(base = {labels[metrics['base']['kind']]}: {metrics['base']['description']})")
    lines += [f"WARNING: {line}" for line in metrics.get("warnings", [])]
    return "\n".join(lines)


def _size(parameters: int) -> str:
    return f"{parameters / 1e6:.1f}M weights"


def generative_summary(metrics: dict[str, Any]) -> str:
    """Perplexity on every test row, text metrics on the generated answers (when there are any), preference
    scores on answer pairs (dpo, orpo); the base model beside."""
    rows = [("base model", metrics.get("base") or {}), ("fine-tuned", metrics["finetuned"]["test"])]
    values = [
        (name, {**{k: v for k, v in m.items() if k != "generation"}, **m.get("generation", {})}) for name, m in rows
    ]
    keys = [k for k in (*_GENERATION_KEYS, *_PREFERENCE_KEYS) if any(k in v for _, v in values)]
    lines = ["", f"{'test split':<12}  " + "  ".join(f"{k:>15}" for k in keys)]
    for name, v in values:
        if v:
            lines.append(f"{name:<12}  " + "  ".join(f"{v[k]:>15.4f}" if k in v else f"{'-':>15}" for k in keys))
    test = metrics["finetuned"]["test"]
    if "pairs" in test:
        lines.append(f"(over {test['pairs']} held-out answer pairs; rewards are against the base model)")
    else:
        tokens = {"mlm": "masked", "clm": "text"}.get(metrics.get("task", ""), "answer")
        counted = f"perplexity over {test['tokens']} {tokens} tokens"
        generated = f"; text metrics over {test['generation']['n']} answers" if "generation" in test else ""
        lines.append(f"({counted}{generated})")
    return "\n".join(lines)


def evaluation_summary(metrics: dict[str, Any]) -> str:
    """What `tunesmith evaluate` prints: a generative run's table, or a classifier's headline numbers."""
    if "finetuned" in metrics:
        return generative_summary({**metrics, "finetuned": {"test": metrics["finetuned"]}})
    return json.dumps({k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}, indent=2)


def cv_summary(result: dict[str, Any]) -> str:
    """What `train --cv` prints: each fold's held-out scores, their mean ± std, and the final model's test scores."""
    names = [k for k in result["mean"] if k != "n"]  # n is the held-out size, shown as `rows`
    keys = [k for k in _SCORE_KEYS if k in names] or names
    width = max([9, *(len(k) for k in keys)])
    lines = ["", f"cross-validation, {result['k']} folds: each fold held out of the training split and scored"]
    lines.append(f"{'fold':>4}  {'rows':>6}  " + "  ".join(f"{k:>{width}}" for k in keys))
    for fold in result["folds"]:
        scores = "  ".join(f"{fold['held_out'][k]:>{width}.4f}" for k in keys)
        lines.append(f"{fold['fold']:>4}  {fold['held_out_rows']:>6}  {scores}")
    label = max((len(k) for k in names), default=0)
    lines += ["", "mean ± std over the folds"]
    lines += [f"{k:<{label}}  {result['mean'][k]:.4f} ± {result['std'][k]:.4f}" for k in names]
    final = result.get("final")
    if final:
        scores = ", ".join(f"{k} {final['test'][k]:.4f}" for k in keys if k in final["test"])
        lines += ["", f"final model (trained on the whole training split) in final/, test split: {scores}"]
    return "\n".join(lines)
