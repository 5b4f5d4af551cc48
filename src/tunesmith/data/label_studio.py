"""Label Studio in and out: its JSON export read as rows, predictions written as its pre-annotations.

An export is a JSON array of tasks, each `{"id", "data": {...}, "annotations": [{"result": [...]}, ...]}`.
A task becomes one row: the `data` fields as columns (`text`, as a Text tag's `value="$text"` names it), and
one column per control (`from_name`) holding its answer: a Choices control's choice (a list when the task
has several, which `--task multilabel` reads), a Rating's or a Number's value (for `--task regression`), a
Labels control's spans of the text (entities, for `--task ner`).
So `--text-column` and `--label-column` name the data field and the control, as in Label Studio's config.

A task answered by several annotators takes the annotation marked ground truth, else the latest one; those
that disagree with it are counted in a warning. A task nobody answered keeps an empty label, which
cleaning drops and records in removed_rows.csv, as any unlabelled row.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tunesmith.errors import TunesmithError

log = logging.getLogger("tunesmith")

FORMAT = "label-studio"
# The control types whose answer is a label: the key of `value` that holds it. Labels marks entity spans.
_ANSWERS = {"choices": "choices", "rating": "rating", "number": "number", "labels": "labels"}


def is_export(rows: list[Any]) -> bool:
    """Whether a parsed JSON array is a Label Studio export (or a task file ready to import)."""
    return bool(rows) and all(isinstance(r, dict) and isinstance(r.get("data"), dict) for r in rows)


def flatten(tasks: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    """One row per task: its data fields, then each control's answer under the control's name."""
    rows, disagreeing = [], 0
    for number, task in enumerate(tasks, start=1):
        row = dict(task["data"])
        chosen, others = _annotation(task, path, number)
        answers = _answers(chosen, path, number) if chosen else {}
        taken = sorted(set(answers) & set(row))
        if taken:
            raise TunesmithError(
                f"{path}: task {number} has a data field and a control both named {taken[0]!r}; rename one in "
                "the Label Studio config, or export again"
            )
        disagreeing += any(_answers(other, path, number) != answers for other in others)
        rows.append(row | answers)
    if disagreeing:
        log.warning(
            "%s: %d tasks have annotations that disagree; each takes its ground-truth annotation, else the latest",
            path,
            disagreeing,
        )
    return rows


def _annotation(task: dict[str, Any], path: Path, number: int) -> tuple[dict | None, list[dict]]:
    annotations = task.get("annotations") or []
    if not isinstance(annotations, list):
        raise TunesmithError(f"{path}: task {number}: annotations is not a list; export the project as JSON again")
    kept = [a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled")]
    if not kept:
        return None, []
    kept.sort(key=lambda a: (bool(a.get("ground_truth")), str(a.get("updated_at") or a.get("created_at") or "")))
    return kept[-1], kept[:-1]


def _answers(annotation: dict[str, Any], path: Path, number: int) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for item in annotation.get("result") or []:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind not in _ANSWERS:
            continue  # text areas, relations and the like are not labels
        name, value = item.get("from_name"), (item.get("value") or {}).get(_ANSWERS[kind])
        if not name or value is None:
            raise TunesmithError(
                f"{path}: task {number}: a {kind} result without from_name or value; export the project as JSON again"
            )
        if kind == "labels":  # one span of the text: the row's entities gather under the control's name
            span = item["value"]
            answers.setdefault(name, []).extend(
                {"start": span["start"], "end": span["end"], "label": str(label)} for label in value
            )
            continue
        if kind == "choices":
            value = [str(v) for v in value]
            value = value[0] if len(value) == 1 else value
        answers[name] = value
    return answers


def read_tasks(path: str | Path) -> list[dict[str, Any]] | None:
    """The tasks of a Label Studio JSON file, as written; None for any other file."""
    import json

    path = Path(path)
    if path.suffix.lower() != ".json":
        return None
    try:
        rows = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return rows if isinstance(rows, list) and is_export(rows) else None


def pre_annotation(
    data: dict[str, Any], predicted: dict[str, Any] | None, kind: str, from_name: str, to_name: str, version: str
) -> dict[str, Any]:
    """One task to import, carrying the model's answer as a prediction the team reviews (none for an empty text).

    kind is the run's task: classification answers one choice, multilabel its chosen ones, regression a Number."""
    task: dict[str, Any] = {"data": data}
    if predicted is None:
        return task
    if kind == "ner":
        results = [
            {
                "type": "labels",
                "value": {"start": e["start"], "end": e["end"], "text": e["text"], "labels": [e["label"]]},
            }
            | {"from_name": from_name, "to_name": to_name, "origin": "prediction", "score": e["score"]}
            for e in predicted["entities"]
        ]
        scores = [e["score"] for e in predicted["entities"]]
        task["predictions"] = [
            {"model_version": version, "result": results, **({"score": min(scores)} if scores else {})}
        ]
        return task
    if kind == "regression":
        result = {"type": "number", "value": {"number": float(predicted["value"])}}
        score = None
    else:
        labels = predicted["labels"] if "labels" in predicted else [predicted["label"]]  # multilabel: "labels"
        result = {"type": "choices", "value": {"choices": labels}}
        score = float(predicted["score"]) if "score" in predicted else None
    result |= {"from_name": from_name, "to_name": to_name, "origin": "prediction"}
    task["predictions"] = [
        {"model_version": version, "result": [result], **({"score": score} if score is not None else {})}
    ]
    return task
