"""`tunesmith report RUN`: one self-contained report.html for a run folder, also written at the end of training.

Everything comes from the files a run leaves: metrics.json (scores of the baselines and of the fine-tuned
model), log.jsonl (loss, learning rate, memory and evaluations over the steps), test_predictions.jsonl
(classifier runs: each test row's prediction), samples.jsonl (sft and seq2seq: base and fine-tuned answers),
data_manifest.json and config.yaml. A section whose file is missing (an older run) is left out with a line
saying so. Charts are inline SVG (charts.py): the file opens offline, with no script or font fetched.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from tunesmith import charts
from tunesmith.errors import TunesmithError
from tunesmith.utils import atomic_write_text

REPORT = "report.html"
PREDICTIONS = "test_predictions.jsonl"
EXPLANATIONS = "explanations.html"  # why the most confident mistakes were made (evaluate/explain.py)
_MISTAKES = 15  # most confident mistakes listed
_SAMPLES = 20  # generated answers listed
# The validation numbers worth a curve, in the order to look for them; the run's own --metric comes first.
_CURVES = ("macro_f1", "micro_f1", "accuracy", "rmse", "spearman", "perplexity", "loss")
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans","PingFang SC","Microsoft YaHei",sans-serif;
margin:2em auto;max-width:70em;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;vertical-align:top}
th{background:#f4f6f8;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
.charts{display:flex;flex-wrap:wrap;gap:1em}.charts svg{max-width:100%;height:auto}
pre{background:#f6f8fa;padding:1em;overflow:auto;font-size:.85em}.muted{color:#777}
td.text{max-width:40em;white-space:pre-wrap}
"""


def write_report(run: str | Path, final: str | Path | None = None) -> Path:
    """Write RUN/report.html (atomically) and return its path. `final` names the run when RUN is the folder
    it is being built in (a run that replaces another is built beside it)."""
    path = Path(run) / REPORT
    atomic_write_text(path, render_report(run, final))
    return path


def render_report(run: str | Path, final: str | Path | None = None) -> str:
    folder = Path(run)
    metrics = _read_json(folder / "metrics.json")
    if metrics is None:
        raise TunesmithError(f"{folder} has no metrics.json: report needs a finished tunesmith run folder")
    config = (folder / "config.yaml").read_text(encoding="utf-8") if (folder / "config.yaml").is_file() else ""
    log = _read_jsonl(folder / "log.jsonl")
    sections = [
        _scores(metrics),
        _curves(log, _configured_metric(config)),
        _classes(metrics),
        _mistakes(_read_jsonl(folder / PREDICTIONS), metrics, folder),
        _samples(_read_jsonl(folder / "samples.jsonl")),
        _data(_read_json(folder / "data_manifest.json")),
        _warnings(metrics),
        f"<h2>Config</h2><details><summary>config.yaml</summary><pre>{_e(config)}</pre></details>"
        if config
        else "<h2>Config</h2><p class='muted'>no config.yaml</p>",
    ]
    return _page(Path(final or folder), _read_json(folder / "tunesmith.json") or {}, metrics, sections)


def _page(folder: Path, marker: dict[str, Any], metrics: dict[str, Any], sections: list[str]) -> str:
    tuned = metrics.get("finetuned", {})
    facts = [f"task {marker.get('task', '?')}", f"method {tuned.get('method', '?')}"]
    facts += [f"{tuned.get('steps', '?')} steps, best at {tuned.get('best_step', '?')}"]
    if tuned.get("stopped_early"):
        facts.append("stopped early")
    if marker.get("created"):
        facts.append(f"created {marker['created']}")
    title = f"tunesmith run {folder.resolve().name}"
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
        f"<meta name='viewport' content='width=device-width'><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1><p class='muted'>{_e(str(folder.resolve()))} · {_e(' · '.join(facts))}</p>"
        + "".join(s for s in sections if s)
        + "</body></html>\n"
    )


# --- sections ------------------------------------------------------------------------------------------


def _scores(metrics: dict[str, Any]) -> str:
    """Each model's test scores side by side: the baselines, then the fine-tuned model."""
    models = _scored_models(metrics)
    rows = [(name, _flat(part)) for name, part in models]
    if not rows:
        return "<h2>Scores</h2><p class='muted'>no test scores in metrics.json</p>"
    columns = list(dict.fromkeys(k for _, scores in rows for k in scores))
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join(
        f"<tr><th>{_e(name)}</th>" + "".join(f"<td class='num'>{_num(scores.get(c))}</td>" for c in columns) + "</tr>"
        for name, scores in rows
    )
    n = next((part["n"] for _, part in models if "n" in part), None)
    caption = f"<p class='muted'>test split, {n} rows</p>" if n is not None else ""
    how = "".join(
        f"<li>{_e(name)}: {_e(metrics[key]['description'])}</li>"
        for key, name in (("zero_shot", "zero-shot"), ("linear_probe", "linear probe"))
        if metrics.get(key, {}).get("description")
    )
    how = f"<ul class='muted'>{how}</ul>" if how else ""
    return f"<h2>Scores</h2>{caption}<table><tr><th></th>{head}</tr>{body}</table>{how}"


def _scored_models(metrics: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, test scores): a classifier run keeps each baseline under its own key with a `test` part; a
    generative run keeps the base model's scores under `base` itself."""
    out = []
    for key, part in metrics.items():
        if key in ("finetuned", "auto", "distill", "warnings") or not isinstance(part, dict):
            continue
        baselines = [p for k, p in metrics.items() if k not in ("base", "finetuned") and isinstance(p, dict)]
        if key == "base" and any("test" in p for p in baselines):
            continue  # a classifier's `base` repeats one of its baselines
        scores = part.get("test", part if key == "base" else None)
        if isinstance(scores, dict) and scores:
            out.append((key.replace("_", " "), scores))
    tuned = metrics.get("finetuned", {}).get("test")
    if isinstance(tuned, dict) and tuned:
        out.append(("fine-tuned", tuned))
    return out


def _curves(log: list[dict[str, Any]], metric: str | None) -> str:
    train = [r for r in log if r.get("type") == "train"]
    evals = [r for r in log if r.get("type") == "eval"]
    if not train:
        return "<h2>Training</h2><p class='muted'>no log.jsonl: nothing to plot</p>"
    steps = [r["step"] for r in train]
    losses = [r["loss"] for r in train]
    loss = [("loss", steps, losses)]
    if len(losses) > 30:  # one step's loss is noisy: the trend is what a reader looks for
        loss.append(("smoothed", steps, charts.smoothed(losses)))
    figures = [
        charts.line_chart(loss, "Training loss", "step", "loss"),
        charts.line_chart([("lr", steps, [r["lr"] for r in train])], "Learning rate", "step", "lr"),
    ]
    shown = next((k for k in (metric, *_CURVES) if k and evals and all(k in r for r in evals)), None)
    if shown:
        points = [r["step"] for r in evals], [r[shown] for r in evals]
        figures.append(charts.line_chart([(shown, *points)], f"Validation {shown}", "step", shown))
    if all("peak_rss_mb" in r for r in train):
        memory = [("peak RSS", steps, [r["peak_rss_mb"] for r in train])]
        if all("gpu_peak_mb" in r for r in train):
            memory.append(("GPU peak", steps, [r["gpu_peak_mb"] for r in train]))
        figures.append(charts.line_chart(memory, "Peak memory so far", "step", "MB"))
    speed = sum(r.get("examples_per_s", 0) for r in train) / len(train)
    line = f"<p class='muted'>{len(train)} steps, {len(evals)} evaluations, mean {speed:.1f} examples/s</p>"
    return f"<h2>Training</h2>{line}<div class='charts'>{''.join(figures)}</div>"


def _classes(metrics: dict[str, Any]) -> str:
    test = metrics.get("finetuned", {}).get("test", {})
    per_class, confusion = test.get("per_class"), test.get("confusion_matrix")
    if not per_class and not confusion:
        return ""
    parts = ["<h2>Per class (test, fine-tuned)</h2><div class='charts'>"]
    if confusion:
        parts.append(charts.heatmap(confusion["matrix"], confusion["labels"], "Confusion matrix"))
    if per_class:
        names = list(per_class)
        parts.append(charts.bar_chart(names, [per_class[n].get("f1-score", 0.0) for n in names], "F1 per class", "F1"))
    parts.append("</div>")
    if per_class:
        keys = ("precision", "recall", "f1-score", "support")
        head = "".join(f"<th>{k}</th>" for k in keys)
        body = "".join(
            f"<tr><th>{_e(name)}</th>" + "".join(f"<td class='num'>{_num(row.get(k))}</td>" for k in keys) + "</tr>"
            for name, row in per_class.items()
        )
        parts.append(f"<table><tr><th>label</th>{head}</tr>{body}</table>")
    return "".join(parts)


def _mistakes(rows: list[dict[str, Any]], metrics: dict[str, Any], folder: Path) -> str:
    """A classifier's most confident wrong answers; a regressor's largest errors."""
    if not rows:
        if "per_class" in metrics.get("finetuned", {}).get("test", {}):
            return f"<h2>Most confident mistakes</h2><p class='muted'>no {PREDICTIONS} in this run folder</p>"
        return ""
    first = rows[0].get("prediction", {})
    if "label" in first:
        wrong = confident_mistakes(rows)
        explained = _explained(folder)
        cells = [
            (r["text"], r.get("label"), r["prediction"]["label"], _num(r["prediction"]["score"]), _why(r, explained))
            for r in wrong
        ]
        title, head = "Most confident mistakes", ("text", "true", "predicted", "confidence", "")
        n_wrong = sum(str(r["prediction"]["label"]) != str(r.get("label")) for r in rows)
        note = f"{n_wrong} of {len(rows)} test rows wrong"
    elif "value" in first:
        errors = sorted(rows, key=lambda r: -abs(float(r["prediction"]["value"]) - float(r["label"])))
        cells = [(r["text"], r.get("label"), _num(r["prediction"]["value"]), "", "") for r in errors]
        title, head, note = "Largest errors", ("text", "true", "predicted", "", ""), f"{len(rows)} test rows"
    else:
        return ""
    body = "".join(
        f"<tr><td class='text'>{_e(str(t))}</td><td>{_e(str(y))}</td><td>{_e(str(p))}</td><td class='num'>{c}</td>"
        f"<td>{why}</td></tr>"
        for t, y, p, c, why in cells[:_MISTAKES]
    )
    header = "".join(f"<th>{h}</th>" for h in head)
    return f"<h2>{title}</h2><p class='muted'>{note}</p><table><tr>{header}</tr>{body}</table>"


def confident_mistakes(rows: list[dict[str, Any]], n: int = _MISTAKES) -> list[dict[str, Any]]:
    """A classifier's wrong test predictions (rows of test_predictions.jsonl), most confident first."""
    wrong = [r for r in rows if str(r["prediction"]["label"]) != str(r.get("label"))]
    return sorted(wrong, key=lambda r: -r["prediction"]["score"])[:n]


def explanation_anchor(row: dict[str, Any]) -> str:
    return f"row-{row.get('row', '')}".replace(" ", "-")


def _explained(folder: Path) -> set[str]:
    """The anchors of explanations.html: the mistakes the run explained."""
    page = folder / EXPLANATIONS
    if not page.is_file():
        return set()
    return set(re.findall(r"<section id='([^']+)'", page.read_text(encoding="utf-8")))


def _why(row: dict[str, Any], explained: set[str]) -> str:
    anchor = explanation_anchor(row)
    return f"<a href='{EXPLANATIONS}#{_e(anchor)}'>why?</a>" if anchor in explained else ""


def _samples(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    keys = ("prompt", "reference", "base", "finetuned")
    body = "".join(
        "<tr>" + "".join(f"<td class='text'>{_e(str(r.get(k, '')))}</td>" for k in keys) + "</tr>"
        for r in rows[:_SAMPLES]
    )
    head = "".join(f"<th>{k}</th>" for k in ("prompt", "reference", "base model", "fine-tuned"))
    note = f"<p class='muted'>{min(len(rows), _SAMPLES)} of {len(rows)} generated test answers</p>"
    return f"<h2>Answers, base and fine-tuned</h2>{note}<table><tr>{head}</tr>{body}</table>"


def _data(manifest: dict[str, Any] | None) -> str:
    if not manifest:
        return ""
    rows = manifest.get("rows", {})
    counts = " · ".join(f"{name} {count}" for name, count in rows.items())
    steps = manifest.get("steps", [])
    body = "".join(
        f"<tr><th>{_e(str(s.get('step', '')))}</th><td>"
        + _e(", ".join(f"{k} {v}" for k, v in s.items() if k != "step"))
        + "</td></tr>"
        for s in steps
    )
    removed = f" · {manifest['removed']} rows removed" if manifest.get("removed") else ""
    table = f"<table>{body}</table>" if body else ""
    return f"<h2>Data</h2><p>{_e(counts)}{_e(removed)}</p>{table}"


def _warnings(metrics: dict[str, Any]) -> str:
    lines = metrics.get("warnings") or []
    return "<h2>Warnings</h2><ul>" + "".join(f"<li>{_e(w)}</li>" for w in lines) + "</ul>" if lines else ""


# --- helpers -------------------------------------------------------------------------------------------


def _flat(scores: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Numbers only, nested parts (generation metrics) as `generation bleu`; row counts, per-class scores and
    matrices left out."""
    out: dict[str, Any] = {}
    for key, value in scores.items():
        if isinstance(value, bool) or key == "n":
            continue
        if isinstance(value, int | float):
            out[prefix + key] = value
        elif isinstance(value, dict) and key not in ("per_class", "confusion_matrix"):
            out |= _flat(value, f"{prefix}{key} ")
    return out


def _configured_metric(config: str) -> str | None:
    """The run's --metric, from its config.yaml (None: the task's default)."""
    try:
        raw = yaml.safe_load(config) or {}
    except yaml.YAMLError:
        return None
    train = raw.get("train") if isinstance(raw, dict) else None
    return train.get("metric") if isinstance(train, dict) else None


def _num(value: Any) -> str:
    if isinstance(value, float):
        if value.is_integer() and abs(value) > 1:  # a count kept as a float (scikit-learn's support)
            return f"{value:.0f}"
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}"
    return "" if value is None else _e(str(value))


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        lines: Iterable[str] = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a kill: the report shows what is whole
    return rows
