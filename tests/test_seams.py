"""The seams between modules (issue 14): layers point one way, recipes are functions to call many times,
each command takes only its own flags, and every section checks itself before any data is read."""

from __future__ import annotations

import ast
import copy
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_intents
from tunesmith.config import RunConfig

SRC = Path(__file__).resolve().parent.parent / "src" / "tunesmith"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every tunesmith module and the tunesmith modules it imports, late (inside functions) imports included."""
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tunesmith"):
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("tunesmith")}
        graph[_module_name(path)] = deps
    return graph


def test_no_import_cycle_among_our_modules() -> None:
    graph = import_graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep in graph and not state.get(dep):
                visit(dep, [*stack, dep])
        state[module] = 2

    for module in sorted(graph):
        if not state.get(module):
            visit(module, [module])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_only_the_cli_and_the_demos_import_a_recipe() -> None:
    allowed = {"tunesmith.cli", "tunesmith.demo", "tunesmith.demo_sft", "tunesmith.demo_ner"}
    offenders = {
        module: sorted(d for d in deps if d.startswith("tunesmith.recipes"))
        for module, deps in import_graph().items()
        if not module.startswith("tunesmith.recipes") and module not in allowed
    }
    assert not {m: d for m, d in offenders.items() if d}


def test_nothing_below_the_cli_imports_the_cli_or_a_demo() -> None:
    upward = {"tunesmith.cli", "tunesmith.demo", "tunesmith.demo_sft", "tunesmith.demo_ner"}
    entry = {"tunesmith.__main__"}  # `python -m tunesmith` (what torchrun runs) is the command line itself
    offenders = {
        module: sorted(deps & upward)
        for module, deps in import_graph().items()
        if module not in upward | entry and deps & upward
    }
    assert not offenders


def test_leaves_import_nothing_of_ours_but_other_leaves() -> None:
    leaves = {"tunesmith.errors", "tunesmith.fields", "tunesmith.rows", "tunesmith.utils"}
    graph = import_graph()
    assert {leaf: graph[leaf] - leaves for leaf in leaves if graph[leaf] - leaves} == {}


@pytest.mark.parametrize("module", ["tunesmith.recipes.classifier", "tunesmith.recipes.generative"])
def test_importing_a_recipe_pulls_in_no_cli_module(module: str) -> None:
    code = (
        f"import sys, {module}; "
        "print(sorted(m for m in sys.modules if m == 'tunesmith.cli' or m.startswith('tunesmith.demo')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- one flag set per command -------------------------------------------------------------------------


def help_of(*command: str) -> str:
    from tunesmith.cli import build_parser

    parser = build_parser()
    for name in command:
        parser = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices[
            name
        ]  # argparse's own registry of subcommands
    return parser.format_help()


def test_data_prepare_help_lists_only_data_flags_with_its_own_defaults() -> None:
    text = help_of("data", "prepare")
    for flag in ("--lora-r", "--epochs", "--precision", "--resume", "--lr", "--method", "--max-new-tokens"):
        assert flag not in text, flag
    for flag in ("--train", "--text-column", "--dedup-threshold", "--augment", "--test-size", "--seed", "--overwrite"):
        assert flag in text, flag
    flat = " ".join(text.split())
    assert "drop duplicate texts and resolve label conflicts before splitting (default: True)" in flat
    assert "(see the --clean-* flags) (default: True)" in flat


def test_data_inspect_help_has_no_training_or_output_flags() -> None:
    text = help_of("data", "inspect")
    for flag in ("--lora-r", "--epochs", "--output", "--resume", "--seed", "--save"):
        assert flag not in text, flag
    assert "--dedup-threshold" in text and "--model" in text


def test_train_help_groups_flags_by_section() -> None:
    text = help_of("train")
    for title in ("data cleaning options", "method: what trains options", "training loop options"):
        assert title in text
    assert "--overwrite" in text and "--resume" in text and "--save" in text


def test_each_section_is_checked_before_any_data_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad augmentation flag used to fail after near-duplicate search had run over the whole file."""
    import tunesmith.data.io as data_io
    from tunesmith.cli import main

    def never(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("data was read before the config was checked")

    monkeypatch.setattr(data_io, "_read_bytes", never)
    write_intents(tmp_path / "d.csv")
    base = ["--train", str(tmp_path / "d.csv"), "--output", str(tmp_path / "run"), "--dedup"]
    assert main(["train", *base, "--augment", "--augment-copies", "0"]) == 2
    assert main(["train", *base, "--dedup-threshold", "1.5"]) == 2
    assert main(["data", "prepare", *base, "--augment", "--augment-swap", "2"]) == 2


# --- recipes you can call many times --------------------------------------------------------------


def small_config(tiny_model: str, tmp_path: Path) -> RunConfig:
    cfg = RunConfig(output=str(tmp_path / "run"))
    cfg.data.train = str(write_intents(tmp_path / "intents.csv", per_class=12))
    cfg.data.dedup.enabled = True
    cfg.model.name = tiny_model
    cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.eval_every = 2, 8, 1e-3, 2
    cfg.eval.baseline = False
    return cfg


def test_train_run_twice_on_prepared_data_with_a_stopping_callback_and_no_save(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tunesmith.data.prepare as prepare
    import tunesmith.recipes.classifier as recipe
    from tunesmith import recipes

    cfg = small_config(tiny_model, tmp_path)
    given = copy.deepcopy(cfg)
    data = recipes.prepare(cfg)

    monkeypatch.setattr(prepare, "prepare_data", lambda *a, **k: pytest.fail("the data was prepared again"))
    tokenised: list[int] = []
    real_encode = recipe.encode_texts

    def counting_encode(tokenizer, texts, max_length):  # type: ignore[no-untyped-def]
        tokenised.append(len(texts))
        return real_encode(tokenizer, texts, max_length)

    monkeypatch.setattr(recipe, "encode_texts", counting_encode)

    seen: list[list[tuple[int, float]]] = [[], []]
    first = recipes.train(
        cfg, data=data, save="none", on_evaluate=lambda step, m: seen[0].append((step, m["macro_f1"]))
    )
    cfg.output = str(tmp_path / "trial-2")
    second = recipes.train(
        cfg, data=data, save="none", on_evaluate=lambda step, m: seen[1].append((step, m["macro_f1"])) or step >= 2
    )
    assert len(tokenised) == 3  # train, validation and test, tokenised once for both runs
    assert len(seen[0]) > 1 and first["finetuned"]["steps"] == seen[0][-1][0]
    assert [s for s, _ in seen[1]] == [2] and second["finetuned"]["steps"] == 2
    assert second["finetuned"]["stopped_early"]
    for run in (tmp_path / "run", tmp_path / "trial-2"):
        heavy = [p.name for p in run.rglob("*") if p.suffix in (".safetensors", ".pt", ".bin") or p.name == "model"]
        assert heavy == [] and not (run / "checkpoints").exists()
        assert (run / "metrics.json").is_file()
    cfg.output = given.output
    assert cfg == given  # the config given was never changed (max_length stays unresolved, and so on)


def test_prepared_data_refuses_a_config_with_other_data_settings(tiny_model: str, tmp_path: Path) -> None:
    from tunesmith import recipes
    from tunesmith.errors import TunesmithError

    cfg = small_config(tiny_model, tmp_path)
    data = recipes.prepare(cfg)
    cfg.data.test_size = 0.3
    with pytest.raises(TunesmithError, match="prepared data was made with other data settings"):
        recipes.train(cfg, data=data, save="none")


def test_the_generative_recipe_leaves_its_config_as_given(tiny_lm: str, tmp_path: Path) -> None:
    from test_generative_run import sft_config
    from tunesmith import recipes

    cfg = sft_config(tiny_lm, tmp_path)
    cfg.data.max_length = 4096  # above the tiny model's 256 positions: the recipe caps its own copy
    cfg.train.epochs, cfg.eval.generate_max_rows = 1, 2
    given = copy.deepcopy(cfg)
    recipes.train(cfg, save="best-only")
    assert cfg == given
    assert (tmp_path / "run" / "model").is_dir() and not (tmp_path / "run" / "checkpoints").exists()


def test_the_registry_names_every_task_and_its_recipe() -> None:
    from tunesmith.config import choices_of
    from tunesmith.tasks import TASKS

    task_field = next(f for f in RunConfig.__dataclass_fields__.values() if f.name == "task")
    assert choices_of(task_field) == tuple(TASKS)
    assert {name for name, info in TASKS.items() if info.generative} == {"sft", "seq2seq", "dpo", "orpo"}
    cli = (SRC / "cli.py").read_text(encoding="utf-8")
    # The CLI asks the registry (through the recipes) which kind a task is, never a list of names.
    assert '"seq2seq"' not in cli and "GENERATIVE" not in cli


def test_serve_loads_runs_only_the_way_predict_and_chat_do() -> None:
    """The service opens a run through `inference.open_run`, never with a loader of its own."""
    graph = import_graph()
    serving = {m: deps for m, deps in graph.items() if m.startswith("tunesmith.serve")}
    assert "tunesmith.inference" in serving["tunesmith.serve.models"]
    own_loading = {"tunesmith.models.loading", "tunesmith.models.registry", "tunesmith.run_folder"}
    assert {m: deps & own_loading for m, deps in serving.items() if deps & own_loading} == {}


def test_serve_help_lists_only_server_flags() -> None:
    text = help_of("serve")
    for flag in ("--lr", "--epochs", "--train", "--output", "--lora-r", "--resume", "--max-new-tokens"):
        assert flag not in text, flag
    for flag in ("--host", "--port", "--api-key", "--max-batch-size", "--max-body-bytes", "--max-tokens"):
        assert flag in text, flag
    assert "server options" in text


def test_predicting_and_serving_load_no_training_only_library() -> None:
    """scikit-learn, scipy and rouge-score (with nltk) cost about 90 MB and a second at start-up; `predict` and
    `serve` never fit a probe or compute a metric, so they load them only when a function needs them."""
    code = (
        "import sys, tunesmith.inference, tunesmith.serve; "
        "print(sorted(m for m in ('sklearn', 'scipy', 'nltk', 'rouge_score', 'sacrebleu') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
