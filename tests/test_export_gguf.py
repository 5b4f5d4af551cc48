"""GGUF back out: an sft run on a Llama (or Qwen2) exported for llama.cpp and Ollama, read back and checked."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
from torch import nn

from conftest import CHATML, FAST, Result, build_tiny_tokenizer, one_error_line, train_args, write_intents
from test_generative_run import sft_config
from tunesmith.cli import main
from tunesmith.config import RunConfig, save_yaml
from tunesmith.data.chat import ChatConfig, load_conversations
from tunesmith.errors import TunesmithError
from tunesmith.export.gguf import (
    CHATML_TEMPLATE,
    F16_TOLERANCE,
    STORED_TOLERANCE,
    check_supported,
    export_gguf,
    write_modelfile,
)
from tunesmith.export.merged import merged_model
from tunesmith.inference import GenerativeRun, load_generative_run, open_run
from tunesmith.recipes.generative import train_generative

QType = gguf.GGMLQuantizationType


@pytest.fixture(scope="module")
def lora_run(tiny_lm: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = sft_config(tiny_lm, tmp_path_factory.mktemp("gguf"))
    train_generative(cfg)
    return Path(cfg.output)


@pytest.fixture(scope="module")
def exports(lora_run: Path) -> dict[str, Path]:
    """The run exported in both GGUF formats through the command line, once for the module."""
    out = {}
    for fmt in ("gguf", "gguf-q8_0"):
        out[fmt] = lora_run.parent / fmt
        assert main(["export", str(lora_run), "--format", fmt, "--output", str(out[fmt])]) == 0
    return out


@pytest.fixture(scope="module")
def run(lora_run: Path) -> GenerativeRun:
    return load_generative_run(lora_run, "cpu")


@pytest.fixture(scope="module")
def merged(lora_run: Path) -> nn.Module:
    opened = open_run(lora_run, "cpu")
    return merged_model(opened, opened.cfg.method.method).eval()


@pytest.fixture(scope="module")
def prompts(lora_run: Path, run: GenerativeRun) -> list[list[int]]:
    """The run's recorded test conversations up to their answers, through the run's chat template."""
    convs, _ = load_conversations(lora_run / "splits" / "test.jsonl", ChatConfig(format="messages"), "utf-8")
    return [run.lm.prompt(c[:-1]) for c in convs]


def _checks(export: Path) -> dict:
    return json.loads((export / "export.json").read_text(encoding="utf-8"))["checks"]


def _unpermute(data: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's q/k row order (the inverse of convert_hf_to_gguf's LlamaModel.permute)."""
    return data.reshape(n_head, data.shape[0] // n_head // 2, 2, *data.shape[1:]).swapaxes(1, 2).reshape(data.shape)


def _field(reader: gguf.GGUFReader, key: str) -> Any:
    return reader.fields[key].contents()


def _logits(model: nn.Module, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0]


def _gguf_model(folder: Path, name: str = "model.gguf") -> nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()


def test_f16_file_holds_exactly_the_merged_weights(exports: dict[str, Path], merged: nn.Module) -> None:
    reader = gguf.GGUFReader(exports["gguf"] / "model.gguf")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, merged.config.num_hidden_layers)
    state = {names.get_name(k, try_suffixes=(".weight", ".bias")): v for k, v in merged.state_dict().items()}
    stored = {t.name: t for t in reader.tensors}
    assert set(stored) == set(state) and "output.weight" in stored  # tiny_lm does not tie its head
    heads, kv_heads = merged.config.num_attention_heads, merged.config.num_key_value_heads
    for name, tensor in stored.items():
        data = np.asarray(tensor.data)
        if ".attn_q." in name or ".attn_k." in name:
            data = _unpermute(data, heads if ".attn_q." in name else kv_heads)
        expected = state[name].detach().float().numpy()
        if expected.ndim == 1:
            assert tensor.tensor_type == QType.F32 and np.array_equal(data, expected), name
        else:
            assert tensor.tensor_type == QType.F16 and np.array_equal(data, expected.astype(np.float16)), name
    # The permutation is not a no-op on this model: without undoing it the query rows would not match.
    q = np.asarray(stored["blk.0.attn_q.weight"].data)
    assert not np.array_equal(q, state["blk.0.attn_q.weight"].detach().numpy().astype(np.float16))


def test_f16_metadata_is_what_llama_cpp_reads(exports: dict[str, Path], merged: nn.Module, run: GenerativeRun) -> None:
    reader = gguf.GGUFReader(exports["gguf"] / "model.gguf")
    expected = {
        "general.architecture": "llama",
        "general.type": "model",
        "general.file_type": int(gguf.LlamaFileType.MOSTLY_F16),
        "llama.context_length": 256,
        "llama.embedding_length": 32,
        "llama.block_count": 2,
        "llama.feed_forward_length": 64,
        "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 2,
        "llama.rope.dimension_count": 8,
        "llama.vocab_size": merged.config.vocab_size,
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt-2",  # a ByteLevel pre-tokenizer with GPT-2's regex, as build_tiny_tokenizer's
        "tokenizer.ggml.eos_token_id": run.lm.tokenizer.convert_tokens_to_ids("<|im_end|>"),
        "tokenizer.ggml.padding_token_id": run.lm.tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        "tokenizer.ggml.add_bos_token": False,
        "tokenizer.chat_template": CHATML,
    }
    assert {k: _field(reader, k) for k in expected} == expected
    assert _field(reader, "llama.rope.freq_base") == pytest.approx(10000.0)
    assert _field(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(1e-6)
    assert "tokenizer.ggml.bos_token_id" not in reader.fields  # the tiny tokenizer has none
    tokenizer = run.lm.tokenizer
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    assert _field(reader, "tokenizer.ggml.tokens") == [by_id[i] for i in range(merged.config.vocab_size)]
    types = _field(reader, "tokenizer.ggml.token_type")
    special = {tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")}
    assert {i for i, t in enumerate(types) if t == gguf.TokenType.CONTROL} == special
    assert all(t == gguf.TokenType.NORMAL for i, t in enumerate(types) if i not in special)
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    assert _field(reader, "tokenizer.ggml.merges") == [" ".join(m) for m in merges]


def test_f16_loads_in_transformers_with_the_runs_logits_and_answers(
    exports: dict[str, Path], merged: nn.Module, prompts: list[list[int]]
) -> None:
    loaded = _gguf_model(exports["gguf"])
    largest, worst = 0.0, 0.0
    for ids in prompts:
        ref, got = _logits(merged, ids), _logits(loaded, ids)
        largest, worst = max(largest, float(ref.abs().max())), max(worst, float((got - ref).abs().max()))
        assert torch.equal(got.argmax(-1), ref.argmax(-1))  # the same greedy choice after every prompt token
        greedy = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": 0}
        ids_t = torch.tensor([ids])
        assert torch.equal(loaded.generate(ids_t, **greedy), merged.generate(ids_t, **greedy))
    assert 0 < worst <= F16_TOLERANCE * max(1.0, largest)  # F16 rounding shows, within what export allows
    checks = _checks(exports["gguf"])
    assert checks["prompts"] == len(prompts) and checks["rows_from"] == "test conversations of the run"
    assert checks["max_abs_diff"] == pytest.approx(worst, rel=1e-3)
    assert checks["max_abs_diff_stored"] <= STORED_TOLERANCE and checks["greedy_agreement"] == 1.0


def test_q8_0_is_smaller_loads_and_mostly_answers_alike(
    exports: dict[str, Path], merged: nn.Module, prompts: list[list[int]]
) -> None:
    f16, q8 = exports["gguf"] / "model.gguf", exports["gguf-q8_0"] / "model.gguf"
    assert q8.stat().st_size < 0.7 * f16.stat().st_size
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(q8).tensors}
    assert {types[n] for n in types if n.endswith("_norm.weight")} == {QType.F32}
    assert {types[n] for n in types if not n.endswith("_norm.weight")} == {QType.Q8_0}  # every row is 32 or 64 long
    loaded = _gguf_model(exports["gguf-q8_0"])
    same = [bool(torch.equal(_logits(loaded, p).argmax(-1), _logits(merged, p).argmax(-1))) for p in prompts]
    assert sum(same) / len(same) >= 0.5
    checks = _checks(exports["gguf-q8_0"])
    assert checks["outtype"] == "q8_0" and checks["max_abs_diff_stored"] <= STORED_TOLERANCE
    assert checks["greedy_agreement"] >= 0.5 and checks["max_abs_diff"] > _checks(exports["gguf"])["max_abs_diff"]


def test_export_folder_holds_the_file_modelfile_tokenizer_and_run_files(exports: dict[str, Path]) -> None:
    folder = exports["gguf"]
    for name in ("model.gguf", "Modelfile", "tokenizer.json", "config.yaml", "export.json", "splits/test.jsonl"):
        assert (folder / name).is_file(), name
    assert not (folder / "model.safetensors").exists()
    modelfile = (folder / "Modelfile").read_text(encoding="utf-8")
    assert "\nFROM ./model.gguf\n" in modelfile
    assert f'TEMPLATE """{CHATML_TEMPLATE}"""' in modelfile
    assert [line for line in modelfile.splitlines() if line.startswith("PARAMETER")] == ['PARAMETER stop "<|im_end|>"']
    assert "SYSTEM" not in modelfile  # the run had no system message and the tiny template adds none


def test_modelfile_follows_the_chat_template(tmp_path: Path) -> None:
    tokenizer = build_tiny_tokenizer()
    eos = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    text = write_modelfile(tmp_path, tokenizer, eos, ChatConfig(system_prompt="Answer in French."))
    assert 'SYSTEM """Answer in French."""' in text and "TEMPLATE" in text
    assert 'PARAMETER stop "<|im_end|>"\nPARAMETER stop "<|endoftext|>"\n' in text
    # A ChatML template that adds its own system message when none is given (as SmolLM2's and Qwen2.5's do).
    default = (
        "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are tiny.<|im_end|>\n{% endif %}" + CHATML
    )
    text = write_modelfile(tmp_path, build_tiny_tokenizer(default), eos, ChatConfig())
    assert 'SYSTEM """You are tiny."""' in text and "TEMPLATE" in text
    # Not ChatML: FROM and the stop tokens only, and a comment that says why.
    plain = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    text = write_modelfile(tmp_path, build_tiny_tokenizer(plain), eos, ChatConfig())
    assert 'TEMPLATE """' not in text and "not ChatML" in text
    assert [line for line in text.splitlines() if not line.startswith("#")] == [
        "FROM ./model.gguf",
        'PARAMETER stop "<|im_end|>"',
        'PARAMETER stop "<|endoftext|>"',
    ]
    assert (tmp_path / "Modelfile").read_text(encoding="utf-8") == text


def test_generate_opens_a_gguf_export(
    cli: Callable[..., Result],
    exports: dict[str, Path],
    lora_run: Path,
    merged: nn.Module,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))  # the conversion cache, not the user's
    answers = []
    for folder in (lora_run, exports["gguf"]):
        result = cli("generate", folder, "--prompt", "hello how are you 3", "--max-new-tokens", "5")
        assert result.code == 0, result.err
        answers.append(json.loads(result.out.strip().splitlines()[-1])["answer"])
    assert answers[0] == answers[1]
    # The export answered with the file's weights (F16-rounded), not with anything else the folder holds.
    opened = load_generative_run(exports["gguf"], "cpu").lm.model.state_dict()
    for name, tensor in merged.state_dict().items():
        rounded = tensor.half().float() if tensor.ndim > 1 else tensor
        assert torch.equal(opened[name], rounded), name


def test_classifier_and_seq2seq_runs_are_refused_before_loading(
    cli: Callable[..., Result], tiny_model: str, tmp_path: Path
) -> None:
    write_intents(tmp_path / "intents.csv")
    classifier = tmp_path / "classifier"
    assert cli(*train_args(tiny_model, tmp_path / "intents.csv", str(classifier), *FAST)).code == 0
    one_error_line(cli("export", classifier, "--format", "gguf", "--output", tmp_path / "a"), "gguf", "sft runs")
    # A seq2seq run's config alone: the refusal needs nothing else, so no weights can have been read.
    seq2seq = tmp_path / "seq2seq"
    seq2seq.mkdir()
    save_yaml(RunConfig(task="seq2seq"), seq2seq / "config.yaml")
    one_error_line(cli("export", seq2seq, "--format", "gguf-q8_0", "--output", tmp_path / "b"), "seq2seq run")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_other_architectures_and_tokenizers_are_refused(tiny_model: str) -> None:
    from transformers import AutoTokenizer, GPT2Config

    with pytest.raises(TunesmithError, match="GPT2LMHeadModel") as refused:
        check_supported("GPT2LMHeadModel", GPT2Config(), build_tiny_tokenizer())
    assert "\n" not in str(refused.value) and "LlamaForCausalLM and Qwen2ForCausalLM" in str(refused.value)
    from transformers import LlamaConfig

    with pytest.raises(TunesmithError, match="pre-tokenizer"):  # WordPiece, not byte-level BPE
        check_supported("LlamaForCausalLM", LlamaConfig(), AutoTokenizer.from_pretrained(tiny_model))
    scaled = LlamaConfig(rope_parameters={"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0})
    with pytest.raises(TunesmithError, match="'linear' scaling"):
        check_supported("LlamaForCausalLM", scaled, build_tiny_tokenizer())


def _tiny_qwen2() -> tuple[nn.Module, Any]:
    """A 2-layer Qwen2 with the tiny tokenizer, a tied head and random q/k/v biases (zero at init, which would hide
    a bias written to the wrong place); 48 wide, so Q8_0 must fall back to F16 for rows of 48."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tiny_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.5)
    return model, tokenizer


@pytest.mark.parametrize("outtype", ["f16", "q8_0"])
def test_a_qwen2_round_trips_through_transformers(tmp_path: Path, outtype: str) -> None:
    model, tokenizer = _tiny_qwen2()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    conv = [{"role": "user", "content": "hello how are you"}]
    ids = tokenizer.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=False)
    checks = export_gguf(model, tokenizer, tmp_path, outtype, [list(ids)], ChatConfig())
    assert checks["max_abs_diff_stored"] <= STORED_TOLERANCE and checks["greedy_agreement"] == 1.0
    reader = gguf.GGUFReader(tmp_path / "model.gguf")
    assert _field(reader, "general.architecture") == "qwen2"
    assert "qwen2.rope.dimension_count" not in reader.fields and "qwen2.vocab_size" not in reader.fields
    stored = {t.name: t for t in reader.tensors}
    assert "output.weight" not in stored  # tied: llama.cpp reads the head from token_embd
    for name in ("blk.0.attn_q.bias", "blk.0.attn_k.bias", "blk.1.attn_v.bias"):
        assert stored[name].tensor_type == QType.F32
    q_bias = original["model.layers.0.self_attn.q_proj.bias"].numpy()
    assert np.array_equal(np.asarray(stored["blk.0.attn_q.bias"].data), q_bias)  # Qwen2: no permutation
    q = original["model.layers.0.self_attn.q_proj.weight"].numpy()
    if outtype == "f16":
        assert np.array_equal(np.asarray(stored["blk.0.attn_q.weight"].data), q.astype(np.float16))
    else:  # rows of 48 are not whole Q8_0 blocks; ffn_down's rows of 96 are
        assert stored["blk.0.attn_q.weight"].tensor_type == QType.F16
        assert stored["blk.0.ffn_down.weight"].tensor_type == QType.Q8_0
    loaded = _gguf_model(tmp_path)
    assert loaded.config.tie_word_embeddings and type(loaded).__name__ == "Qwen2ForCausalLM"
    model.load_state_dict(original)
    ref, got = _logits(model, list(ids)), _logits(loaded, list(ids))
    assert float((got - ref).abs().max()) <= F16_TOLERANCE * max(1.0, float(ref.abs().max()))


def test_weights_f16_cannot_hold_are_refused_in_one_line(tmp_path: Path) -> None:
    model, tokenizer = _tiny_qwen2()
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight[0, 0] = 1e5  # F16's largest finite value is 65504
    ids = tokenizer("hello how are you")["input_ids"]
    assert torch.isfinite(_logits(model, ids)).all()  # the run itself answers
    with pytest.raises(TunesmithError, match="F16 cannot hold") as refused:
        export_gguf(model, tokenizer, tmp_path, "f16", [ids], ChatConfig())
    assert "\n" not in str(refused.value)


def test_llama_cpp_reads_the_file_as_the_run_does(
    exports: dict[str, Path], run: GenerativeRun, merged: nn.Module, prompts: list[list[int]]
) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(model_path=str(exports["gguf"] / "model.gguf"), n_ctx=256, logits_all=True, verbose=False)
    ids = prompts[0]
    # The vocabulary, merges and pre-tokenizer as llama.cpp applies them give the run's own token ids.
    assert llm.tokenize(run.lm.tokenizer.decode(ids).encode("utf-8"), add_bos=False, special=True) == ids
    llm.eval(ids)
    ref = _logits(merged, ids).numpy()
    got = np.asarray(llm.scores[: len(ids)])
    # llama.cpp also rounds activations to F16 in its F16 matmuls: the F16 allowance, not the exact one.
    assert np.abs(got - ref).max() <= F16_TOLERANCE * max(1.0, float(np.abs(ref).max()))
    llm.reset()
    answer = [t for _, t in zip(range(4), llm.generate(ids, temp=0.0), strict=False)]
    assert len(answer) == 4 and all(0 <= t < merged.config.vocab_size for t in answer)
