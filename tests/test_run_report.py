"""report.html: written at the end of every run and by `tunesmith report`, whole by itself, honest about what it
lacks, and safe to open whatever the data holds."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from conftest import FAST, fast_intents_run, one_error_line, train_args, write_intents
from tunesmith.run_report import PREDICTIONS, REPORT, render_report

_EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.I)


def svgs(page: str) -> list[str]:
    return re.findall(r"<svg.*?</svg>", page, re.S)


def test_a_classifier_run_writes_its_report(tiny_model: str, tmp_path: Path) -> None:
    run = fast_intents_run(tiny_model, tmp_path, "run")
    page = (run / REPORT).read_text(encoding="utf-8")
    for heading in ("Scores", "Training", "Per class (test, fine-tuned)", "Most confident mistakes", "Data", "Config"):
        assert f"<h2>{heading}</h2>" in page, heading
    # loss, lr, validation macro_f1, memory; the confusion matrix and F1 per class
    assert len(svgs(page)) == 6
    assert "Validation macro_f1" in page and "Confusion matrix" in page
    assert not _EXTERNAL.search(page), "the page must open offline: nothing fetched"
    predictions = [json.loads(line) for line in (run / PREDICTIONS).read_text(encoding="utf-8").splitlines()]
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(predictions) == metrics["finetuned"]["test"]["n"]
    labels = set(metrics["finetuned"]["test"]["per_class"])
    assert all(p["prediction"]["label"] in labels and p["label"] in labels and p["text"] for p in predictions)
    wrong = sum(p["prediction"]["label"] != p["label"] for p in predictions)
    assert f"{wrong} of {len(predictions)} test rows wrong" in page


def fake_run(folder: Path, texts: list[tuple[str, str, str, float]]) -> Path:
    """A classifier run folder by hand: Chinese labels, and rows (text, true, predicted, confidence)."""
    folder.mkdir()
    labels = ["好评", "差评"]
    per_class = {name: {"precision": 0.8, "recall": 0.7, "f1-score": 0.75, "support": 2} for name in labels}
    test = {"accuracy": 0.75, "macro_f1": 0.74, "n": len(texts), "per_class": per_class}
    test["confusion_matrix"] = {"labels": labels, "matrix": [[1, 1], [0, 2]]}
    metrics = {"linear_probe": {"test": {"accuracy": 0.6, "macro_f1": 0.55, "n": 4}}, "finetuned": {"test": test}}
    (folder / "metrics.json").write_text(json.dumps(metrics, ensure_ascii=False), encoding="utf-8")
    log = [{"type": "train", "step": s, "loss": 1 / s, "lr": 1e-4, "examples_per_s": 10.0} for s in (1, 2, 3)]
    log += [{"type": "eval", "step": 3, "macro_f1": 0.7}, '{"type": "train", "st']  # a line a kill cut short
    lines = [json.dumps(r) if isinstance(r, dict) else r for r in log]
    (folder / "log.jsonl").write_text("\n".join(lines), encoding="utf-8")
    rows = [
        {"text": t, "label": y, "row": i, "prediction": {"label": p, "score": c}}
        for i, (t, y, p, c) in enumerate(texts)
    ]
    (folder / PREDICTIONS).write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    return folder


def test_mistakes_come_most_confident_first_and_texts_are_escaped(tmp_path: Path) -> None:
    run = fake_run(
        tmp_path / "run",
        [
            ("<script>alert(1)</script> 服务很差", "差评", "好评", 0.61),
            ("质量很好，物流也快", "好评", "差评", 0.97),
            ("还可以", "好评", "好评", 0.99),
            ("不推荐", "差评", "差评", 0.88),
        ],
    )
    page = render_report(run)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; 服务很差" in page
    mistakes = page[page.index("<h2>Most confident mistakes</h2>") :]
    assert "2 of 4 test rows wrong" in mistakes
    assert mistakes.index("质量很好") < mistakes.index("服务很差")  # 0.97 before 0.61
    assert "还可以" not in mistakes  # right answers are not mistakes
    # Chinese labels stay text in the SVG, for the browser to set in its own fonts
    assert any(">好评</text>" in svg for svg in svgs(page))
    scores = page[page.index("<h2>Scores</h2>") : page.index("<h2>Training</h2>")]
    assert "linear probe" in scores and "fine-tuned" in scores and "0.5500" in scores and "0.7400" in scores


def test_a_run_without_predictions_or_config_says_so(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run", [("好", "好评", "好评", 0.9)])
    (run / PREDICTIONS).unlink()
    page = render_report(run)
    assert f"no {PREDICTIONS} in this run folder" in page and "no config.yaml" in page


def test_an_sft_run_reports_answers_side_by_side(tiny_lm: str, tmp_path: Path) -> None:
    from test_generative_run import sft_config
    from tunesmith.recipes.generative import train_generative

    cfg = sft_config(tiny_lm, tmp_path)
    cfg.train.epochs = 1
    train_generative(cfg)
    page = (Path(cfg.output) / REPORT).read_text(encoding="utf-8")
    assert "<h2>Answers, base and fine-tuned</h2>" in page
    scores = page[page.index("<h2>Scores</h2>") : page.index("<h2>Training</h2>")]
    assert "<th>base</th>" in scores and "<th>fine-tuned</th>" in scores and "perplexity" in scores
    assert "generation bleu" in scores
    samples = [json.loads(line) for line in (Path(cfg.output) / "samples.jsonl").read_text().splitlines()]
    assert samples and all(s["reference"] in page or "&" in s["reference"] for s in samples[:5])
    assert "Validation perplexity" in page  # the answers' loss, as a reader knows it


def test_report_command_rewrites_and_refuses_to_overwrite(cli, tiny_model: str, tmp_path: Path) -> None:
    run = fast_intents_run(tiny_model, tmp_path, "run")
    (run / REPORT).unlink()
    result = cli("report", run)
    assert result.code == 0, result.err
    assert (run / REPORT).is_file() and str(run / REPORT) in result.out
    elsewhere = tmp_path / "mine.html"
    elsewhere.write_text("the user's own page", encoding="utf-8")
    one_error_line(cli("report", run, "--output", elsewhere), "--overwrite")
    assert elsewhere.read_text(encoding="utf-8") == "the user's own page"
    assert cli("report", run, "--output", elsewhere, "--overwrite").code == 0
    assert "<h2>Scores</h2>" in elsewhere.read_text(encoding="utf-8")
    one_error_line(cli("report", tmp_path), "not a tunesmith run folder")


def test_a_report_that_fails_does_not_cost_the_run(
    cli, tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import tunesmith.recipes.common as common

    def broken(*_: object) -> None:
        raise ValueError("a bug in the report")

    monkeypatch.setattr(common, "write_report", broken)
    write_intents(tmp_path / "intents.csv")
    with caplog.at_level(logging.WARNING, logger="tunesmith"):
        result = cli(*train_args(tiny_model, tmp_path / "intents.csv", str(tmp_path / "run"), *FAST))
    assert result.code == 0, result.err
    assert (tmp_path / "run" / "metrics.json").is_file() and (tmp_path / "run" / "model").is_dir()
    assert "report.html was not written (a bug in the report)" in result.err + caplog.text
