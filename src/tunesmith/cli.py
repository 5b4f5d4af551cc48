"""The command line: parse into a config, call one library function, print what it returns."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from tunesmith.config import (
    DATA_INSPECT,
    DATA_PREPARE,
    DISTILL,
    PRUNE,
    TRAIN,
    CommandFlags,
    RunConfig,
    add_config_flags,
    build_config,
    flag_values,
)
from tunesmith.errors import TunesmithError

if TYPE_CHECKING:
    from tunesmith.inference import Sampling

log = logging.getLogger("tunesmith")

EPILOG = """examples:
  tunesmith demo
  tunesmith advise data.csv                      (which model and method, memory, time; prints a train command)
  tunesmith train --train data.csv --cv 5 --output runs/cv   (5-fold cross-validation, then a final model)
  tunesmith tune config.yaml --study studies/x --trials 20  (Optuna search; the YAML's search: is the space)
  tunesmith train --model minilm-l6 --train data.csv --text-column text --label-column label --output runs/x
  tunesmith train config.yaml --lr 3e-5          (flags override the YAML file)
  tunesmith train --output runs/x --resume       (continue a killed run)
  tunesmith predict runs/x --text "where is my parcel?"
  tunesmith predict runs/x --input new.csv --output predictions.csv
  tunesmith evaluate runs/x --test test.csv
  tunesmith train --task sft --model smollm2-135m-instruct --train chats.jsonl --method lora --output runs/chat
  tunesmith generate runs/chat --prompt "How do I reset my password?"
  tunesmith chat runs/chat
  tunesmith train --task dpo --model smollm2-135m-instruct --train pairs.jsonl --method lora --output runs/dpo
  tunesmith train --task mlm --model multilingual-e5-small --train reviews.txt --output runs/dapt
  tunesmith train --model runs/dapt/model --train labelled.csv --output runs/after-dapt
  tunesmith export runs/chat --output merged/
  tunesmith export runs/x --format onnx-int8 --output shipped/   (checked against PyTorch on the run's test rows)
  tunesmith export runs/chat --format gguf --output chat-gguf/   (then: cd chat-gguf && ollama create chat -f Modelfile)
  tunesmith compress runs/x --output runs/x-small                 (fp32, ONNX and int8 side by side, measured)
  tunesmith distill --teacher runs/x --student-layers 6 --output runs/x-6   (half the layers, on the soft labels)
  tunesmith prune runs/x --ffn-keep 0.5 --output runs/x-ffn50     (half of each FFN, then a 1-epoch recovery)
  tunesmith serve runs/x runs/chat --port 8000    (POST /v1/classify; OpenAI's /v1/chat/completions for runs/chat)
  tunesmith report runs/x                         (runs/x/report.html: scores, curves, confusion matrix, mistakes)
  tunesmith ui                                    (a page at http://127.0.0.1:7860 to start, watch and try runs)
"""

T = TypeVar("T")

_TRUST = "run code shipped with the run's model (only for models you trust; a run folder never turns this on)"


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
    commands = train.add_argument_group("what to do with --output")
    commands.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --output; the new run is built beside it and swapped in when it finishes",
    )
    commands.add_argument("--resume", action="store_true", help="continue the run in --output from its checkpoint")
    commands.add_argument(
        "--save",
        choices=("full", "best-only", "none"),
        default="full",
        help="full: model and checkpoints; best-only: the model without checkpoints; none: metrics only",
    )
    cross = train.add_argument_group("cross-validation (classification, regression, multilabel)")
    cross.add_argument(
        "--cv",
        type=int,
        metavar="K",
        help="cross-validate: K runs, each scored on one fold of the training split it did not train on "
        "(--output/fold-1 ... fold-K, metrics only), written with their mean and std to --output/cv.json and cv.csv",
    )
    cross.add_argument(
        "--cv-refit",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with --cv, then train the final model on the whole training split into --output/final, saved as "
        "--save says (default: on)",
    )
    scale = train.add_argument_group("data-parallel training (torch.distributed)")
    scale.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train in N processes through torchrun (DDP: gloo on the CPU, one GPU each with nccl); --batch-size "
        "stays the examples per optimizer step, shared by the processes. For several machines run torchrun "
        "yourself: torchrun --nnodes ... -m tunesmith train ...",
    )
    add_config_flags(train, TRAIN)

    predict = sub.add_parser("predict", help="label texts with a trained run")
    predict.add_argument("run", help="run folder written by `tunesmith train`")
    texts = predict.add_mutually_exclusive_group()
    texts.add_argument("--text", action="append", help="a text to label; repeat for several")
    texts.add_argument("--input", help="file of texts (csv, tsv, json, jsonl, parquet); needs --output")
    predict.add_argument("--output", help="where --input's predictions go (same formats); never the input itself")
    predict.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    predict.add_argument("--text-column", action="append", help="text column(s) of --input; default: the run's")
    predict.add_argument(
        "--format",
        default="table",
        choices=("table", "label-studio"),
        help="table: the input's rows plus prediction columns; label-studio: tasks to import into Label Studio, "
        "each with the model's answer as a pre-annotation (--output FILE.json)",
    )
    predict.add_argument(
        "--from-name", help="label-studio: the name of the Choices (or Number) tag; default: the run's label column"
    )
    predict.add_argument("--to-name", help="label-studio: the name of the Text tag; default: the run's text column")
    _run_flags(predict)

    explain = sub.add_parser("explain", help="show which tokens pushed a classifier's prediction")
    explain.add_argument("run", help="run folder of a classification, multilabel or regression run")
    explain.add_argument("--text", action="append", required=True, help="a text to explain; repeat for several")
    explain.add_argument("--target", help="explain this label's score (default: each text's predicted label)")
    explain.add_argument(
        "--steps",
        type=int,
        default=32,
        help="points on the integration path to start with; doubled, up to 256, while the error |delta| is over 0.05",
    )
    explain.add_argument("--html", help="also write the explanations as coloured text to this HTML file")
    explain.add_argument("--overwrite", action="store_true", help="replace an existing --html file")
    _run_flags(explain)

    generate = sub.add_parser("generate", help="answer prompts with a trained sft or seq2seq run")
    generate.add_argument("run", help="run folder written by `tunesmith train --task sft|seq2seq`")
    generate.add_argument("--prompt", action="append", required=True, help="a user message; repeat for several")
    _sampling_flags(generate)

    chat = sub.add_parser("chat", help="talk to a trained sft run (same chat template as training)")
    chat.add_argument("run", help="run folder written by `tunesmith train --task sft`")
    _sampling_flags(chat)

    export = sub.add_parser("export", help="save a trained run as a transformers, ONNX or GGUF model, checked")
    export.add_argument("run", help="run folder written by `tunesmith train`")
    export.add_argument("--output", required=True, help="folder for the exported model (never the run itself)")
    export.add_argument(
        "--format",
        default="merged",
        choices=("merged", "onnx", "onnx-int8", "gguf", "gguf-q8_0"),
        help="merged: a plain transformers folder, any adapter folded in; onnx / onnx-int8: classifiers for "
        "ONNX Runtime, checked against PyTorch on the run's test rows; gguf (F16) / gguf-q8_0: an sft run on a "
        "Llama or Qwen2 model as model.gguf with an Ollama Modelfile, checked against the run on its test "
        "conversations",
    )
    export.add_argument(
        "--trim-vocab",
        action="store_true",
        help="classifiers: keep only the tokens the run's training and validation rows use, plus special tokens "
        "and every single-character piece (unseen words split into those); the tokenizer is rewritten to match",
    )
    export.add_argument("--overwrite", action="store_true", help="replace an earlier export in --output")
    _run_flags(export)

    compress = sub.add_parser("compress", help="export a classifier run in several formats and measure each")
    compress.add_argument("run", help="classifier run folder written by `tunesmith train`")
    compress.add_argument("--output", required=True, help="folder for the exports and compression.json")
    compress.add_argument(
        "--formats",
        nargs="+",
        default=["onnx", "onnx-int8"],
        choices=("merged", "onnx", "onnx-int8"),
        help="exports to measure beside the run",
    )
    compress.add_argument(
        "--with",
        dest="others",
        nargs="+",
        default=[],
        metavar="RUN",
        help="more finished runs or exports to measure in the same table on this run's test split "
        "(a distilled or pruned student, say)",
    )
    compress.add_argument(
        "--trim-vocab", action="store_true", help="also measure each format with its vocabulary trimmed (see export)"
    )
    compress.add_argument("--overwrite", action="store_true", help="replace an earlier compress --output")

    distill = sub.add_parser(
        "distill",
        help="train a smaller student on a classifier run's soft labels",
        description="Train a student on the teacher run's soft labels (KL at --temperature, mixed with the hard "
        "labels by --alpha), scored on the teacher's own validation and test splits. The student is --student "
        "(any model) or the teacher itself with --student-layers and/or --ffn-keep.",
    )
    distill.add_argument("config", nargs="?", help="YAML config file (optional)")
    distill.add_argument(
        "--student",
        dest="model.name",
        metavar="MODEL",
        default=argparse.SUPPRESS,
        help="student model: alias, folder or hub id (default: the teacher's)",
    )
    distill.add_argument("--overwrite", action="store_true", help="replace the run in --output")
    distill.add_argument("--resume", action="store_true", help="continue the distillation in --output")
    add_config_flags(distill, DISTILL)

    prune = sub.add_parser(
        "prune",
        help="remove layers or FFN neurons of a classifier run, then recover with a short distillation",
        description="Structured pruning: drop whole layers (--student-layers) and/or each layer's least important "
        "FFN neurons (--ffn-keep), ranked on the run's validation split, then recover for --epochs on the run's "
        "soft labels. Dense CPU kernels get faster because the matrices get smaller; unstructured (scattered "
        "zero) weights would not be faster, so tunesmith does not offer them.",
    )
    prune.add_argument("run", help="classifier run folder written by `tunesmith train`")
    prune.add_argument("--overwrite", action="store_true", help="replace the run in --output")
    prune.add_argument("--resume", action="store_true", help="continue the recovery in --output")
    add_config_flags(prune, PRUNE)

    evaluate = sub.add_parser("evaluate", help="score a trained run on any labelled file")
    evaluate.add_argument("run", help="run folder written by `tunesmith train`")
    evaluate.add_argument(
        "--test",
        help="labelled file (or conversations, for sft/seq2seq) in the run's columns (default: the run's test split)",
    )
    evaluate.add_argument("--output", help="also write the metrics to this JSON file")
    evaluate.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    _run_flags(evaluate)

    report = sub.add_parser(
        "report",
        help="write a run's report.html: scores, curves, confusion matrix, mistakes, answers (training writes one)",
    )
    report.add_argument("run", help="run folder written by `tunesmith train`")
    report.add_argument("--output", help="write the page here instead of RUN/report.html")
    report.add_argument("--overwrite", action="store_true", help="replace an existing --output file")

    demo = sub.add_parser("demo", help="fine-tune a real model on real data, offline, in minutes")
    demo.add_argument(
        "kind",
        nargs="?",
        default="classify",
        choices=("classify", "sft", "ner"),
        help="classify: Chinese sentiment with e5-small (default); sft: LoRA chat tuning of SmolLM2; "
        "ner: Chinese names, places and organisations (People's Daily) with e5-small",
    )
    demo.add_argument(
        "--output", help="run folder; an earlier demo run there is replaced (default: runs/demo, runs/demo-KIND)"
    )
    demo.add_argument("--quick", action="store_true", help="a smaller run for a smoke test (about a minute)")

    data = sub.add_parser("data", help="inspect and prepare labelled text files")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    inspect = data_sub.add_parser(
        "inspect",
        help="report duplicates, conflicts, leakage, lengths and labels",
        description="A data-quality report of --train (or a positional file) and any --validation/--test.",
    )
    inspect.add_argument("file", nargs="?", help="the file to inspect (same as --train)")
    inspect.add_argument("--report", help="also write the report to this .json or .html file")
    inspect.add_argument("--overwrite", action="store_true", help="replace an existing --report file")
    add_config_flags(inspect, DATA_INSPECT)
    prepare = data_sub.add_parser(
        "prepare",
        help="write clean, deduplicated, leak-free train/validation/test files",
        description="Clean, deduplicate and split into --output: train/validation/test.csv, removed.csv "
        "(every dropped row with its reason), manifest.json and report.html. Cleaning and deduplication "
        "are on here unless --no-clean / --no-dedup; augmentation with --augment.",
    )
    prepare.add_argument("config", nargs="?", help="YAML config file (optional); its data section is used")
    prepare.add_argument("--overwrite", action="store_true", help="replace an earlier prepare in --output")
    add_config_flags(prepare, DATA_PREPARE)

    _tune_parser(sub)
    _advise_parser(sub)
    _serve_parser(sub)
    _ui_parser(sub)
    sub.add_parser("models", help="list the model aliases that work offline")
    return parser


def _advise_parser(sub: argparse._SubParsersAction) -> None:
    import dataclasses

    from tunesmith.advise import AdviseConfig
    from tunesmith.config import ADVISE

    advise = sub.add_parser(
        "advise",
        help="which model and method fit your data and machine, how much memory and time; the command to run",
        description="Reads your data with each candidate's tokenizer, estimates peak training memory, measures a "
        "few training steps on this machine, ranks model x method x precision, and prints the train command.",
    )
    advise.add_argument("file", nargs="?", help="the training file (same as --train)")
    advise.add_argument("--json", help="also write the advice, every estimate included, to this JSON file")
    advise.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    group = advise.add_argument_group("advice options")
    for f in dataclasses.fields(AdviseConfig):
        kwargs = {"nargs": "+"} if f.name in ("models", "methods") else {"type": type(f.default)}
        if f.default is None and "nargs" not in kwargs:
            kwargs["type"] = str
        help_text = f"{f.metadata['help']} (default: {f.default})"
        group.add_argument(f"--{f.name}", default=f.default, help=help_text, **kwargs)
    add_config_flags(advise, ADVISE)


def cmd_advise(args: argparse.Namespace) -> int:
    from tunesmith.advise import AdviseConfig, advise, render, to_json
    from tunesmith.config import ADVISE
    from tunesmith.outputs import check_output_file
    from tunesmith.utils import atomic_write_json

    flags = flag_values(args)
    if args.file:
        flags.setdefault("data", {})["train"] = args.file
    cfg = build_config(None, flags, ADVISE)
    if args.json:  # checked before the models load, not after
        inputs = [cfg.data.train, cfg.data.validation, cfg.data.test]
        check_output_file(Path(args.json), inputs, args.overwrite, "--json")
    advice = advise(cfg, _settings(args, AdviseConfig))
    print(render(advice))
    if args.json:
        atomic_write_json(Path(args.json), to_json(advice))
    return 0


def _tune_parser(sub: argparse._SubParsersAction) -> None:
    from tunesmith.config import CommandFlags

    tune = sub.add_parser(
        "tune",
        help="search hyper-parameters with Optuna; the config's search: section is the space",
        description="Hyper-parameter search: every trial trains on the data prepared once, each validation "
        "evaluation may prune it, and the best trial is trained again into STUDY/best. The config file's search: "
        "maps flags to a list of values or {low, high, log, step}; without it a space for the method is used.",
    )
    tune.add_argument("config", nargs="?", help="YAML config file with an optional search: section")
    tune.add_argument("--config", dest="config_file", metavar="CONFIG", help="the same file, as a flag")
    study = tune.add_argument_group("the study")
    study.add_argument("--study", required=True, help="study folder: study.db, trials/, trials.csv, best.yaml, plots")
    study.add_argument("--trials", type=int, default=20, help="finished trials of the study, all workers together")
    study.add_argument("--timeout", type=float, help="seconds this worker searches (default: no limit)")
    study.add_argument(
        "--storage", help="sqlite:///FILE, postgresql://..., or journal:FILE (default: sqlite STUDY/study.db)"
    )
    study.add_argument(
        "--study-name", help="workers on one --storage and --study-name share a study (default: the folder's name)"
    )
    study.add_argument("--pruner", choices=("median", "hyperband", "none"), default="median")
    study.add_argument("--no-refit", action="store_true", help="do not train the best trial again into STUDY/best")
    study.add_argument("--resume", action="store_true", help="continue the study in --study (or join it as a worker)")
    study.add_argument("--overwrite", action="store_true", help="replace the study in --study (one tunesmith made)")
    add_config_flags(tune, CommandFlags(tuple(p for p in TRAIN.takes if p != "output")))  # trials go in --study


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    from tunesmith.serve.config import ServeConfig

    serve = sub.add_parser(
        "serve",
        help="serve finished runs over HTTP: /v1/classify, and OpenAI's /v1/chat/completions for sft runs",
        description="Serves each run (or export folder) under its folder's name, or NAME=RUN. Classifiers answer "
        "POST /v1/classify, micro-batched across requests; sft and seq2seq runs answer OpenAI's "
        "/v1/chat/completions and /v1/completions (streaming too), so the official openai client works. "
        "GET /health, GET /v1/models. Stops cleanly on SIGTERM or Ctrl-C.",
    )
    serve.add_argument("runs", nargs="+", metavar="RUN", help="run or export folder, or NAME=FOLDER; several allowed")
    _settings_flags(serve, ServeConfig, "server")


def _settings_flags(parser: argparse.ArgumentParser, settings: type, title: str) -> None:
    """One flag per field of a command's own settings dataclass (`serve`'s, `ui`'s)."""
    import dataclasses

    from tunesmith.config import CommandFlags

    names = tuple(f.name for f in dataclasses.fields(settings))
    add_config_flags(parser, CommandFlags(names), root=settings, title=title)


def _settings(args: argparse.Namespace, settings: type[T]) -> T:
    """The settings dataclass from the flags given; the fields not given keep their defaults."""
    import dataclasses

    return settings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(settings) if hasattr(args, f.name)})


def _ui_parser(sub: argparse._SubParsersAction) -> None:
    from tunesmith.ui.config import UiConfig

    ui = sub.add_parser(
        "ui",
        help="a web page to start runs from a form, watch them train live, stop them and open their reports",
        description="Serves one page (offline: no script or font from the internet) on --host:--port. It lists "
        "the runs in --runs-dir, starts `tunesmith train` from a form into a new folder there (never over an "
        "existing one), streams its progress as log.jsonl grows, stops it as Ctrl-C would (resumable), and opens "
        "each run's report.html. Ctrl-C stops the page and any training it started.",
    )
    _settings_flags(ui, UiConfig, "page")


def cmd_ui(args: argparse.Namespace) -> int:
    from tunesmith.ui import UiConfig, run_ui

    run_ui(_settings(args, UiConfig))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from tunesmith.serve import ServeConfig, serve

    serve(args.runs, _settings(args, ServeConfig))
    return 0


def _run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--trust-remote-code", action="store_true", help=_TRUST)


def _sampling_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--system", help="system message (default: none, or the one the run trained with)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy (deterministic)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling")
    _run_flags(parser)


def cmd_train(args: argparse.Namespace) -> int:
    from tunesmith import recipes
    from tunesmith.run_folder import train_config
    from tunesmith.summaries import summary
    from tunesmith.utils import is_main_process

    if args.nproc is not None and args.nproc != 1 and "RANK" not in os.environ:  # RANK: torchrun started us
        return _launch(args, train_config(args.config, flag_values(args), args.resume))
    _stop_on_sigterm()
    if args.cv is not None:
        return _train_cv(args)
    if args.cv_refit is not None:
        raise TunesmithError("--cv-refit and --no-cv-refit apply to cross-validation: add --cv K, or drop them")
    cfg = train_config(args.config, flag_values(args), args.resume)
    metrics = recipes.train(cfg, overwrite=args.overwrite, resume=args.resume, save=args.save)
    if is_main_process():  # the other torchrun ranks score and write nothing: their metrics are partial
        print(summary(metrics))
        print(f"run folder: {cfg.output}")
    return 0


def _stop_on_sigterm() -> None:
    """SIGTERM (`kill`, a scheduler's preemption, the ui's Stop) ends a training as Ctrl-C does: an interrupted
    run with its checkpoint, for --resume. Ctrl-C's own signal is no use to a program started in the background
    of a script, where the shell has it ignored before Python starts."""
    import signal
    import threading

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def _launch(args: argparse.Namespace, cfg: RunConfig) -> int:
    """`train --nproc N`: the same command line under torchrun, where each process sees it is one rank of N.

    The config is checked here first: a bad flag is one line, not one per rank amid torchrun's report.
    torchrun's own parser is given only its flags: it would read ours (--nproc is a prefix of its
    --nproc-per-node) before handing them on.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    from tunesmith.train.distributed import check_rank_device

    if args.nproc < 1:
        raise TunesmithError(f"--nproc must be at least 1, got {args.nproc}")
    cfg.validate()
    check_rank_device(cfg.train.device)
    # torchrun gives each process one thread unless told; on a CPU, share the cores out instead
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.nproc)))
    launch = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={args.nproc}", "-m", "tunesmith"])
    launch.training_script_args = args.argv
    try:
        run(launch)
    except ChildFailedError as e:
        ranks = ", ".join(str(failure.local_rank) for failure in e.failures.values())
        raise TunesmithError(f"training stopped: rank {ranks} failed (its error is above)") from None
    return 0


def _train_cv(args: argparse.Namespace) -> int:
    """`train --cv K`: --cv and --cv-refit are command flags, never config fields, so no config.yaml records them."""
    from tunesmith.recipes.cv import cross_validate
    from tunesmith.run_folder import train_config
    from tunesmith.summaries import cv_summary

    if args.resume:
        raise TunesmithError("--resume continues one run and cannot resume --cv; start the cross-validation again")
    cfg = train_config(args.config, flag_values(args), resume=False)
    refit = args.cv_refit is not False
    result = cross_validate(cfg, args.cv, refit=refit, overwrite=args.overwrite, save=args.save)
    print(cv_summary(result))
    print(f"cross-validation folder: {cfg.output}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from tunesmith import workbench

    if args.data_command == "inspect":
        flags = flag_values(args)
        if args.file:
            flags.setdefault("data", {})["train"] = args.file
        cfg = build_config(None, flags, DATA_INSPECT)
        if args.report:  # checked before the report is made, not after
            workbench.check_report_path(cfg, Path(args.report), args.overwrite)
        inspection = workbench.inspect(cfg)
        print(inspection.text)
        if args.report:
            workbench.write_inspection(inspection, Path(args.report))
            print(f"report written to {args.report}")
        return 0
    cfg = build_config(args.config, flag_values(args), DATA_PREPARE)
    print(workbench.prepare(cfg, overwrite=args.overwrite))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from tunesmith.inference import load_run, predict_file, predict_label_studio, predict_texts

    if not args.text and not args.input:
        raise TunesmithError("give --text TEXT (repeatable) or --input FILE --output FILE")
    if args.input and not args.output:
        raise TunesmithError("--input needs --output FILE for the predictions")
    if args.format == "label-studio" and not args.input:
        raise TunesmithError("--format label-studio writes a file of tasks: give --input FILE --output FILE.json")
    if args.format != "label-studio" and (args.from_name or args.to_name):
        raise TunesmithError("--from-name and --to-name name Label Studio's tags: add --format label-studio")
    run = load_run(args.run, args.device, args.trust_remote_code)
    if args.format == "label-studio":
        n = predict_label_studio(run, args.input, args.output, args.from_name, args.to_name, args.overwrite, args.run)
        print(f"wrote {n} tasks with pre-annotations to {args.output}")
    elif args.text:
        for text, pred in zip(args.text, predict_texts(run, args.text), strict=True):
            print(json.dumps({"text": text, **pred}, ensure_ascii=False))
    else:
        n = predict_file(run, args.input, args.output, args.text_column, args.overwrite, args.run)
        print(f"wrote {n} predictions to {args.output}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from tunesmith.evaluate.explain import as_html, as_text, page
    from tunesmith.inference import explain_run, load_run
    from tunesmith.outputs import check_output_file
    from tunesmith.utils import atomic_write_text

    if not 1 <= args.steps <= 1000:
        raise TunesmithError(f"--steps must be between 1 and 1000, got {args.steps}")
    if args.html:
        check_output_file(Path(args.html), [args.run], args.overwrite, "--html")
    run = load_run(args.run, args.device, args.trust_remote_code)
    explanations = explain_run(run, args.text, args.target, args.steps)
    print("\n\n".join(as_text(e) for e in explanations))
    if args.html:
        title = f"Why {Path(args.run).resolve().name} predicted that"
        atomic_write_text(Path(args.html), page(title, [as_html(e) for e in explanations]))
        print(f"html: {args.html}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tunesmith.inference import evaluate_run
    from tunesmith.summaries import evaluation_summary

    metrics = evaluate_run(args.run, args.test, args.device, args.trust_remote_code, args.output, args.overwrite)
    print(evaluation_summary(metrics))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from tunesmith.outputs import read_marker
    from tunesmith.run_report import REPORT, render_report
    from tunesmith.utils import atomic_write_text

    run = Path(args.run)
    kind = (read_marker(run) or {}).get("kind") if run.is_dir() else None
    if kind != "run":
        made = f"a {kind} folder" if kind else "not a tunesmith run folder"
        raise TunesmithError(f"{run} is {made}: pass the --output of a `tunesmith train` run")
    out = Path(args.output) if args.output else run / REPORT  # the run's own report.html is tunesmith's
    if args.output and out.exists() and not args.overwrite:
        raise TunesmithError(f"{out} exists: pass --overwrite to replace it, or another --output")
    atomic_write_text(out, render_report(run))
    print(f"report: {out}")
    return 0


def _sampling(args: argparse.Namespace) -> Sampling:
    from tunesmith.inference import Sampling

    return Sampling(args.max_new_tokens, args.temperature, args.top_p, args.seed).validate()


def cmd_generate(args: argparse.Namespace) -> int:
    from tunesmith.inference import generate_answers, load_generative_run

    sampling = _sampling(args)
    run = load_generative_run(args.run, args.device, args.trust_remote_code)
    for prompt, text in zip(args.prompt, generate_answers(run, args.prompt, sampling, args.system), strict=True):
        print(json.dumps({"prompt": prompt, "answer": text}, ensure_ascii=False))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from tunesmith.inference import ChatSession, load_generative_run

    sampling = _sampling(args)
    session = ChatSession(load_generative_run(args.run, args.device, args.trust_remote_code), sampling, args.system)
    print(f"chatting with the fine-tuned model; {ChatSession.COMMANDS}")
    while True:
        try:
            line = input("you> ")
        except EOFError:
            print()
            return 0
        if ChatSession.wants_exit(line):
            return 0
        answer = session.reply(line)
        if answer is not None:
            print(f"model> {answer}")


def cmd_export(args: argparse.Namespace) -> int:
    from tunesmith.export import export_run

    done = export_run(
        args.run, args.output, args.format, args.overwrite, args.device, args.trust_remote_code, args.trim_vocab
    )
    print(done.summary())
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    from tunesmith.export.compare import compress_run, compression_table

    table = compress_run(args.run, args.output, args.formats, args.overwrite, args.others, args.trim_vocab)
    print(compression_table(table))
    print(f"written to {args.output}/compression.json")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    flags = flag_values(args)
    return _distilled(args, flags, DISTILL, getattr(args, "config", None))


def cmd_prune(args: argparse.Namespace) -> int:
    flags = flag_values(args)
    flags.setdefault("distill", {})["teacher"] = args.run
    layers, ffn = flags["distill"].get("student_layers"), flags["distill"].get("ffn_keep")
    if not args.resume and layers is None and (ffn is None or ffn >= 1):
        raise TunesmithError("say what to remove: --student-layers N (layers kept) and/or --ffn-keep F (0 < F < 1)")
    return _distilled(args, flags, PRUNE, None)


def _distilled(args: argparse.Namespace, flags: dict, command: CommandFlags, config_file: str | None) -> int:
    from tunesmith import recipes
    from tunesmith.config import load_yaml
    from tunesmith.recipes.distill import teacher_base
    from tunesmith.run_folder import resumed_config
    from tunesmith.summaries import summary

    from_file = load_yaml(config_file) if config_file else {}
    output = flags.get("output") or from_file.get("output")
    if args.resume:  # the saved config names the teacher
        base = resumed_config(output)
    else:
        teacher = (flags.get("distill") or {}).get("teacher") or (from_file.get("distill") or {}).get("teacher")
        if not teacher:
            raise TunesmithError("no teacher: pass --teacher RUN, the classifier run whose soft labels it learns")
        base = teacher_base(teacher)
    cfg = build_config(config_file, flags, command, base)
    metrics = recipes.train(cfg, overwrite=args.overwrite, resume=args.resume)
    print(summary(metrics))
    print(f"run folder: {cfg.output}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from tunesmith.summaries import summary

    if args.kind == "sft":
        from tunesmith.demo_sft import run_sft_demo as run
    elif args.kind == "ner":
        from tunesmith.demo_ner import run_ner_demo as run
    else:
        from tunesmith.demo import run_demo as run
    metrics, hint = run(args.output, quick=args.quick)
    print(summary(metrics))
    print(hint)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from tunesmith.recipes.tune import TuneConfig, load_search, summary_text, tune

    if args.config and args.config_file and args.config != args.config_file:
        raise TunesmithError("give the config file once: as CONFIG or as --config")
    cfg, space = load_search(args.config_file or args.config, flag_values(args))
    settings = TuneConfig(
        study=args.study,
        trials=args.trials,
        timeout=args.timeout,
        storage=args.storage,
        study_name=args.study_name,
        pruner=args.pruner,
        refit=not args.no_refit,
    )
    print(summary_text(tune(cfg, space, settings, overwrite=args.overwrite, resume=args.resume)))
    return 0


def cmd_models(_: argparse.Namespace) -> int:
    from tunesmith.models.registry import describe_aliases

    print(describe_aliases())
    return 0


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    # tunesmith's own lines at INFO; other libraries' INFO (the ONNX optimiser logs hundreds of lines per export)
    # stays quiet, their warnings do not
    logging.basicConfig(level=logging.WARNING, format="tunesmith: %(message)s", stream=sys.stderr)
    log.setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `train --nproc` runs it again under torchrun
    commands = {
        "train": cmd_train,
        "predict": cmd_predict,
        "evaluate": cmd_evaluate,
        "explain": cmd_explain,
        "data": cmd_data,
        "demo": cmd_demo,
        "models": cmd_models,
        "generate": cmd_generate,
        "chat": cmd_chat,
        "export": cmd_export,
        "compress": cmd_compress,
        "distill": cmd_distill,
        "prune": cmd_prune,
        "tune": cmd_tune,
        "advise": cmd_advise,
        "serve": cmd_serve,
        "report": cmd_report,
        "ui": cmd_ui,
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
