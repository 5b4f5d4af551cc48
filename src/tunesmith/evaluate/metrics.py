"""Metrics from scikit-learn and scipy; every function takes model scores and encoded targets."""

from __future__ import annotations

import numpy as np

# scikit-learn and scipy load inside the functions that use them, not with the module: `predict` and `serve`
# import this module (through the tasks) and never compute a metric; the two cost about 150 MB and a second.

# Validation metrics that can pick the best checkpoint, per task, and which of them fall as models improve.
SELECTABLE = {
    "classification": (
        "accuracy",
        "macro_f1",
        "macro_precision",
        "macro_recall",
        "weighted_f1",
        "weighted_precision",
        "weighted_recall",
    ),
    "regression": ("mae", "rmse", "mse", "r2", "pearson", "spearman"),
    "multilabel": (
        "micro_f1",
        "macro_f1",
        "micro_precision",
        "micro_recall",
        "macro_precision",
        "macro_recall",
        "subset_accuracy",
        "hamming_loss",
    ),
    "sft": ("loss", "perplexity"),
    "seq2seq": ("loss", "perplexity"),
    "mlm": ("loss", "perplexity"),
    "clm": ("loss", "perplexity"),
    "dpo": ("loss", "pair_accuracy", "reward_accuracy", "reward_margin"),
    "orpo": ("loss", "pair_accuracy", "nll"),
}
LOWER_IS_BETTER = frozenset({"mae", "rmse", "mse", "hamming_loss", "loss", "perplexity", "nll"})


def classification(probs: np.ndarray, targets: np.ndarray, labels: list[str]) -> dict:
    from sklearn import metrics as skm

    pred = probs.argmax(axis=1)
    ids = list(range(len(labels)))
    p_ma, r_ma, f_ma, _ = skm.precision_recall_fscore_support(
        targets, pred, labels=ids, average="macro", zero_division=0
    )
    p_w, r_w, f_w, _ = skm.precision_recall_fscore_support(
        targets, pred, labels=ids, average="weighted", zero_division=0
    )
    report = skm.classification_report(
        targets, pred, labels=ids, target_names=labels, output_dict=True, zero_division=0
    )
    return {
        "accuracy": float(skm.accuracy_score(targets, pred)),
        "macro_f1": float(f_ma),
        "macro_precision": float(p_ma),
        "macro_recall": float(r_ma),
        "weighted_f1": float(f_w),
        "weighted_precision": float(p_w),
        "weighted_recall": float(r_w),
        "per_class": {name: report[name] for name in labels},
        "confusion_matrix": {"labels": labels, "matrix": skm.confusion_matrix(targets, pred, labels=ids).tolist()},
        "n": len(targets),
    }


def regression(pred: np.ndarray, targets: np.ndarray) -> dict:
    from scipy import stats
    from sklearn import metrics as skm

    pred, targets = pred.reshape(-1), targets.reshape(-1)
    constant = np.std(pred) == 0 or np.std(targets) == 0
    return {
        "mae": float(skm.mean_absolute_error(targets, pred)),
        "rmse": float(np.sqrt(skm.mean_squared_error(targets, pred))),
        "mse": float(skm.mean_squared_error(targets, pred)),
        "r2": float(skm.r2_score(targets, pred)) if len(targets) > 1 else float("nan"),
        "pearson": float("nan") if constant else float(stats.pearsonr(pred, targets)[0]),
        "spearman": float("nan") if constant else float(stats.spearmanr(pred, targets)[0]),
        "n": len(targets),
    }


def multilabel(probs: np.ndarray, targets: np.ndarray, labels: list[str], threshold: float) -> dict:
    from sklearn import metrics as skm

    pred = (probs >= threshold).astype(int)
    targets = targets.astype(int)
    out = {"threshold": threshold, "n": len(targets)}
    for avg in ("micro", "macro"):
        p, r, f, _ = skm.precision_recall_fscore_support(targets, pred, average=avg, zero_division=0)
        out.update({f"{avg}_f1": float(f), f"{avg}_precision": float(p), f"{avg}_recall": float(r)})
    out["subset_accuracy"] = float(skm.accuracy_score(targets, pred))
    out["hamming_loss"] = float(skm.hamming_loss(targets, pred))
    f_each = skm.f1_score(targets, pred, average=None, zero_division=0)
    out["per_label_f1"] = {name: float(f) for name, f in zip(labels, f_each, strict=True)}
    return out


def best_threshold(probs: np.ndarray, targets: np.ndarray) -> float:
    """The single decision threshold that maximises micro-F1 (on validation data)."""
    from sklearn import metrics as skm

    grid = np.round(np.arange(0.05, 0.96, 0.05), 2)
    scores = [
        skm.f1_score(targets.astype(int), (probs >= t).astype(int), average="micro", zero_division=0) for t in grid
    ]
    return float(grid[int(np.argmax(scores))])
