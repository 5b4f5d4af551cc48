"""The config is one set of dataclasses seen three ways: YAML file, CLI flags and Python objects."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from tunesmith.cli import build_parser, main
from tunesmith.config import (
    TRAIN,
    RunConfig,
    _leaf_fields,
    _strip_optional,
    apply_overrides,
    check_flag_names_unique,
    flag_name,
    from_dict,
    load_yaml,
    save_yaml,
    to_dict,
)
from tunesmith.errors import TunesmithError

LEAVES = _leaf_fields(RunConfig)
TRAIN_LEAVES = [leaf for leaf in LEAVES if TRAIN.wants(leaf[0])]  # distill: is `tunesmith distill`'s


def resolve(yaml_path: Path | None, *flags: str) -> RunConfig:
    """What `tunesmith train [yaml_path] flags...` builds, the way cmd_train builds it."""
    args = build_parser().parse_args(["train", *([str(yaml_path)] if yaml_path else []), *flags])
    raw = load_yaml(yaml_path) if yaml_path else {}
    return from_dict(apply_overrides(raw, args), str(yaml_path or "flags"))


def write_yaml(tmp_path: Path, raw: dict[str, Any], name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def get(cfg: RunConfig, path: tuple[str, ...]) -> Any:
    node: Any = cfg
    for part in path:
        node = getattr(node, part)
    return node


def nest(path: tuple[str, ...], value: Any, into: dict[str, Any]) -> None:
    node = into
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def default_of(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def sample_values(path: tuple[str, ...], f: dataclasses.Field, hint: Any) -> tuple[Any, Any, list[str]]:
    """A YAML value, a different flag value and the flag tokens that give it, both unlike the default."""
    base = _strip_optional(hint)
    flag = f"--{flag_name(path, f)}"
    default = default_of(f)
    if base is bool:
        in_yaml = not default  # None (an "auto" default) becomes True
        return in_yaml, not in_yaml, [flag if not in_yaml else f"--no-{flag[2:]}"]
    if f.metadata.get("choices"):
        others = [c for c in f.metadata["choices"] if c != default]
        in_yaml = others[0]
        in_flag = next(c for c in f.metadata["choices"] if c != in_yaml)
        return in_yaml, in_flag, [flag, in_flag]
    if typing.get_origin(base) is list:
        return ["from-yaml"], ["flag-a", "flag-b"], [flag, "flag-a", flag, "flag-b"]
    if base is int:
        return 7, 9, [flag, "9"]
    if base is float:
        return 0.25, 0.125, [flag, "0.125"]
    assert base is str, f"no sample value for {path} of type {hint}"
    return "from-yaml", "from-flag", [flag, "from-flag"]


# --- flags ----------------------------------------------------------------------------------------


def test_every_leaf_field_has_a_unique_flag() -> None:
    check_flag_names_unique()
    names = [flag_name(path, f) for path, f, _ in LEAVES]
    assert len(names) == len(set(names))
    commands = build_parser()._subparsers._group_actions[0].choices
    for path, f, _ in LEAVES:
        # a student's teacher is named by `tunesmith distill`, which reads the teacher's own splits
        command = "distill" if path[0] == "distill" else "train"
        assert f"--{flag_name(path, f)}" in commands[command].format_help()


def test_every_field_can_be_set_from_yaml(tmp_path: Path) -> None:
    raw: dict[str, Any] = {}
    for path, f, hint in LEAVES:
        nest(path, sample_values(path, f, hint)[0], raw)
    cfg = resolve(write_yaml(tmp_path, raw))
    for path, f, hint in LEAVES:
        assert get(cfg, path) == sample_values(path, f, hint)[0], path


def test_flags_absent_keep_the_yaml_values(tmp_path: Path) -> None:
    """Flag defaults are suppressed, so a YAML value is never reset by a flag that was not given."""
    yaml_path = write_yaml(tmp_path, {"train": {"lr": 0.5, "batch_size": 4}, "eval": {"baseline": False}})
    cfg = resolve(yaml_path, "--epochs", "1")
    assert (cfg.train.lr, cfg.train.batch_size, cfg.eval.baseline, cfg.train.epochs) == (0.5, 4, False, 1.0)
    assert cfg.train.grad_accum == RunConfig().train.grad_accum


@pytest.mark.parametrize(("path", "f", "hint"), TRAIN_LEAVES, ids=[".".join(p) for p, _, _ in TRAIN_LEAVES])
def test_every_flag_overrides_yaml(tmp_path: Path, path: tuple[str, ...], f: Any, hint: Any) -> None:
    in_yaml, in_flag, tokens = sample_values(path, f, hint)
    raw: dict[str, Any] = {}
    nest(path, in_yaml, raw)
    yaml_path = write_yaml(tmp_path, raw)
    assert get(resolve(yaml_path), path) == in_yaml
    assert get(resolve(yaml_path, *tokens), path) == in_flag


def test_all_flags_at_once_override_all_yaml_fields(tmp_path: Path) -> None:
    raw: dict[str, Any] = {}
    tokens: list[str] = []
    for path, f, hint in TRAIN_LEAVES:
        in_yaml, _, flag_tokens = sample_values(path, f, hint)
        nest(path, in_yaml, raw)
        tokens += flag_tokens
    cfg = resolve(write_yaml(tmp_path, raw), *tokens)
    for path, f, hint in TRAIN_LEAVES:
        assert get(cfg, path) == sample_values(path, f, hint)[1], path


def test_cli_flags_in_the_example_form() -> None:
    cfg = resolve(
        None,
        "--train",
        "d.csv",
        "--lr",
        "0.1",
        "--text-column",
        "a",
        "--text-column",
        "b",
        "--no-baseline",
        "--method",
        "lora",
        "--lora-target",
        "query",
        "--output",
        "runs/x",
    )
    assert cfg.data.train == "d.csv"
    assert cfg.train.lr == 0.1
    assert cfg.data.text_columns == ["a", "b"]
    assert cfg.eval.baseline is False
    assert cfg.method.method == "lora"
    assert cfg.method.lora_target_modules == ["query"]
    assert cfg.output == "runs/x"
    cfg.validate()


def test_repeated_list_flag_replaces_the_yaml_list(tmp_path: Path) -> None:
    yaml_path = write_yaml(tmp_path, {"data": {"text_columns": ["title", "body"]}})
    assert resolve(yaml_path).data.text_columns == ["title", "body"]
    assert resolve(yaml_path, "--text-column", "summary").data.text_columns == ["summary"]


def test_yaml_scalar_for_a_list_field_becomes_a_list(tmp_path: Path) -> None:
    cfg = resolve(write_yaml(tmp_path, {"data": {"text_columns": "body", "label_columns": "intent"}}))
    assert (cfg.data.text_columns, cfg.data.label_columns) == (["body"], ["intent"])


def test_yaml_short_float_like_3e_5_is_a_float(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 3e-5\n", encoding="utf-8")  # PyYAML reads 3e-5 as a string
    assert resolve(path).train.lr == pytest.approx(3e-5)


def test_flag_for_a_yaml_section_left_empty(tmp_path: Path) -> None:
    """BUG: a section whose entries are all commented out loads as None; a flag into it crashes.

    apply_overrides does `node.setdefault("data", {})`, gets None back and raises TypeError, which the
    CLI shows as a traceback instead of building the config.
    """
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  # train: old.csv\nmodel:\n  name: minilm-l6\n", encoding="utf-8")
    cfg = resolve(path, "--train", "new.csv")
    assert cfg.data.train == "new.csv"


# --- errors ---------------------------------------------------------------------------------------


def config_error(raw: dict[str, Any]) -> str:
    with pytest.raises(TunesmithError) as caught:
        from_dict(raw, "c.yaml").validate()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_unknown_top_level_field_is_named() -> None:
    message = config_error({"learning_rate": 0.1})
    assert "unknown field 'learning_rate'" in message
    assert "c.yaml" in message


def test_unknown_nested_field_is_named_with_its_section() -> None:
    message = config_error({"train": {"learning_rate": 0.1}})
    assert "c.yaml.train" in message
    assert "'learning_rate'" in message
    assert "lr" in message  # the known fields are listed


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        ({"train": {"lr": "fast"}}, "train.lr"),
        ({"train": {"epochs": [1, 2]}}, "train.epochs"),
        ({"train": {"batch_size": "eight"}}, "train.batch_size"),
        ({"data": {"group_split": "yes please"}}, "data.group_split"),
        ({"eval": {"baseline": 1}}, "eval.baseline"),
        ({"train": 3}, "train"),
        ({"model": "minilm-l6"}, "model"),
    ],
)
def test_wrong_type_is_an_error(raw: dict[str, Any], where: str) -> None:
    message = config_error(raw)
    assert f"c.yaml.{where}" in message
    assert "expected" in message


@pytest.mark.parametrize(
    ("section", "name", "value"),
    [("train", "batch_size", 2.5), ("train", "max_steps", 10.9), ("train", "epochs", True), ("train", "lr", True)],
)
def test_lossy_number_coercion_is_an_error(section: str, name: str, value: Any) -> None:
    """BUG: _coerce calls int()/float() on anything, so 2.5 becomes batch size 2 and `true` becomes 1."""
    with pytest.raises(TunesmithError, match=name):
        from_dict({section: {name: value}}, "c.yaml")


def test_wrong_type_flag_is_rejected_by_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["train", "--lr", "fast"])
    assert caught.value.code == 2
    assert "--lr" in capsys.readouterr().err


def test_invalid_choice_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["train", "--method", "foo"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "--method" in err
    assert "invalid choice" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("raw", "flag", "choice"),
    [
        ({"train": {"scheduler": "foo"}}, "--scheduler", "cosine"),
        ({"train": {"precision": "fp8"}}, "--precision", "bf16"),
        ({"task": "ranking"}, "--task", "regression"),
        ({"method": {"method": "qlora"}}, "--method", "lora"),
    ],
)
def test_invalid_choice_in_yaml_is_an_error(raw: dict[str, Any], flag: str, choice: str) -> None:
    message = config_error({"data": {"train": "d.csv"}, "output": "run", **raw})
    assert flag in message
    assert choice in message


def test_invalid_choice_in_yaml_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    yaml_path = write_yaml(
        tmp_path, {"data": {"train": "d.csv"}, "output": str(tmp_path / "run"), "train": {"scheduler": "foo"}}
    )
    assert main(["train", str(yaml_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("tunesmith: error: --scheduler must be one of linear, cosine, constant")
    assert not (tmp_path / "run").exists()


def test_batch_size_must_be_a_multiple_of_grad_accum() -> None:
    cfg = resolve(None, "--train", "d.csv", "--output", "run", "--batch-size", "10", "--grad-accum", "3")
    with pytest.raises(TunesmithError, match=r"--batch-size 10 is not a multiple of --grad-accum 3"):
        cfg.validate()
    resolve(None, "--train", "d.csv", "--output", "run", "--batch-size", "12", "--grad-accum", "3").validate()


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        ([], "--train FILE"),
        (["--train", "d.csv"], "--output DIR"),
        (["--train", "d.csv", "--output", "r", "--lr", "0"], "--lr must be above 0"),
        (["--train", "d.csv", "--output", "r", "--test-size", "0.5"], "--test-size"),
        (["--train", "d.csv", "--output", "r", "--label-column", "a", "--label-column", "b"], "one --label-column"),
        (["--train", "d.csv", "--output", "r", "--epochs", "0"], "--epochs or --max-steps"),
    ],
)
def test_validate_rejects_unusable_settings(flags: list[str], match: str) -> None:
    with pytest.raises(TunesmithError, match=match):
        resolve(None, *flags).validate()


def test_several_label_columns_are_fine_for_multilabel() -> None:
    cfg = resolve(
        None, "--train", "d.csv", "--output", "r", "--task", "multilabel", "--label-column", "a", "--label-column", "b"
    )
    assert cfg.validate().data.label_columns == ["a", "b"]


def test_yaml_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(TunesmithError, match="not found"):
        load_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1\n", encoding="utf-8")
    with pytest.raises(TunesmithError, match=r"bad\.yaml.*not valid YAML"):
        load_yaml(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(TunesmithError, match="mapping"):
        load_yaml(listed)


# --- saving ---------------------------------------------------------------------------------------


def test_saved_config_round_trips(tmp_path: Path) -> None:
    cfg = resolve(
        None,
        "--train",
        "d.csv",
        "--test",
        "t.csv",
        "--text-column",
        "title",
        "--text-column",
        "body",
        "--lr",
        "3e-5",
        "--dropout",
        "0.2",
        "--no-freeze-embeddings",
        "--method",
        "lora",
        "--lora-target",
        "query",
        "--lora-target",
        "value",
        "--epochs",
        "1.5",
        "--label-separator",
        ";",
        "--encoding",
        "gb18030",
        "--output",
        "runs/中文",
        "--no-baseline",
        "--task",
        "multilabel",
    )
    save_yaml(cfg, tmp_path / "config.yaml")
    again = from_dict(load_yaml(tmp_path / "config.yaml"), "config.yaml")
    assert again == cfg
    assert to_dict(again) == to_dict(cfg)


def test_default_config_round_trips(tmp_path: Path) -> None:
    save_yaml(RunConfig(), tmp_path / "config.yaml")
    assert from_dict(load_yaml(tmp_path / "config.yaml")) == RunConfig()


def test_metric_must_belong_to_the_task() -> None:
    cfg = RunConfig(task="regression", output="x")
    cfg.data.train = "t.csv"
    cfg.train.metric = "r2"
    assert cfg.validate() is cfg
    cfg.train.metric = "macro_f1"
    with pytest.raises(TunesmithError, match="not a regression metric; choose one of mae, rmse"):
        cfg.validate()


def test_null_for_a_required_field_is_one_clear_error() -> None:
    with pytest.raises(TunesmithError, match=r"config.train.weight_decay: needs a value"):
        from_dict({"train": {"weight_decay": None}})


def test_auto_in_yaml_and_null_both_leave_a_field_to_the_recipe() -> None:
    cfg = from_dict({"train": {"lr": "auto", "batch_size": None, "epochs": 2}})
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.epochs) == (None, None, 2.0)
    assert cfg.train.auto_fields() == ["lr", "batch_size", "warmup_ratio", "class_weights"]


def test_max_length_default_depends_on_the_task() -> None:
    from tunesmith.config import RunConfig

    for task, expected in (("classification", 128), ("sft", 1024), ("seq2seq", 1024)):
        cfg = RunConfig(task=task, output="runs/x")
        cfg.data.train = "data.csv"
        assert cfg.resolved().data.max_length == expected
        assert cfg.data.max_length is None  # resolving fills a copy; the config given stays as it was
    cfg = RunConfig(task="sft", output="runs/x")
    cfg.data.train, cfg.data.max_length = "data.csv", 300
    assert cfg.resolved().data.max_length == 300


def test_every_yaml_example_in_the_readmes_is_a_valid_config() -> None:
    """The READMEs' YAML blocks are what users copy: each must load and validate (given a training file)."""
    import re
    from pathlib import Path

    import yaml

    from tunesmith.config import from_dict

    root = Path(__file__).resolve().parent.parent
    blocks = [
        block
        for name in ("README.md", "README_zh.md")
        for block in re.findall(r"```yaml\n(.*?)```", (root / name).read_text(encoding="utf-8"), flags=re.S)
    ]
    assert len(blocks) >= 3
    from tunesmith.recipes.tune import parse_space

    for block in blocks:
        raw = yaml.safe_load(block)
        space = raw.pop("search", None)  # what `tunesmith tune` reads beside the run config
        if space is not None:
            assert parse_space(space)
        if not raw:  # a block that shows only a search space
            continue
        raw.setdefault("data", {})["train"] = raw["data"].get("train") or "data.csv"
        from_dict(raw, "README").validate()
