"""SFT encoding: answer-only labels under several chat templates, EOS, truncation, packing, token-normalised loss."""

from __future__ import annotations

import itertools

import pytest
import torch

from conftest import build_tiny_tokenizer
from tunesmith.errors import TunesmithError
from tunesmith.tasks.sft import (
    IGNORE,
    PLAIN_TEMPLATE,
    SFT,
    LMCollator,
    encode_all,
    encode_conversation,
    pack,
    prompt_ids,
    set_chat_template,
)

CONV = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "hello how are you"},
    {"role": "assistant", "content": "I am fine, thank you"},
    {"role": "user", "content": "你好，今天天气很好"},
    {"role": "assistant", "content": "谢谢！"},
]
ZEPHYR = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _tokenizer(template: str | None):
    tok = build_tiny_tokenizer(template)
    set_chat_template(tok, None, "tiny")
    return tok


# What the template writes after an answer, up to the next turn: it belongs to the answer (it holds the EOS).
AFTER_ANSWER = {"chatml": "<|im_end|>\n", "zephyr": "<|im_end|>\n", "plain": "<|im_end|>\n\n"}


def _labelled_runs(labels: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for i, t in enumerate(labels):
        if t == IGNORE:
            continue
        if i and labels[i - 1] != IGNORE and runs:
            runs[-1].append(t)
        else:
            runs.append([t])
    return runs


@pytest.mark.parametrize("template", ["chatml", "zephyr", "plain"])
def test_exactly_the_assistant_spans_carry_labels(template: str) -> None:
    tok = _tokenizer({"chatml": build_tiny_tokenizer().chat_template, "zephyr": ZEPHYR, "plain": None}[template])
    enc = encode_conversation(tok, CONV, max_length=512, train_on_prompt=False)
    # The tokens are the whole rendered conversation, nothing added or lost...
    assert tok.decode(enc.input_ids) == tok.apply_chat_template(CONV, tokenize=False)
    # ...the labels are the input ids where labelled, and the labelled runs are exactly the two answers.
    assert all(t in (IGNORE, i) for t, i in zip(enc.labels, enc.input_ids, strict=True))
    runs = [tok.decode(run) for run in _labelled_runs(enc.labels)]
    answers = [t["content"] for t in CONV if t["role"] == "assistant"]
    assert runs == [a + AFTER_ANSWER[template] for a in answers]
    # Each answer is tokenized as it is on its own, so generation produces the same ids it trained on.
    for run, answer in zip(_labelled_runs(enc.labels), answers, strict=True):
        own = tok(answer, add_special_tokens=False)["input_ids"]
        assert run[: len(own)] == own and tok.eos_token_id in run[len(own) :]


def test_train_on_prompt_labels_everything_but_the_first_token() -> None:
    tok = _tokenizer(build_tiny_tokenizer().chat_template)
    enc = encode_conversation(tok, CONV, 512, train_on_prompt=True)
    assert enc.labels[0] == IGNORE and enc.labels[1:] == enc.input_ids[1:]


def test_generation_prompt_is_the_training_prefix() -> None:
    """The template used to generate is the one trained on: identical token ids up to the answer."""
    for template in (build_tiny_tokenizer().chat_template, ZEPHYR, PLAIN_TEMPLATE):
        tok = _tokenizer(template)
        enc = encode_conversation(tok, CONV, 512, train_on_prompt=False)
        prompt = prompt_ids(tok, CONV[:-1])
        assert enc.input_ids[: len(prompt)] == prompt
        assert enc.labels[len(prompt) - 1] == IGNORE and enc.labels[len(prompt)] != IGNORE
        assert tok.decode(enc.input_ids[len(prompt) :]).startswith("谢谢！")


def test_model_without_template_gets_the_plain_one_and_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    tok = build_tiny_tokenizer(None)
    set_chat_template(tok, None, "some-base-model")
    assert tok.chat_template == PLAIN_TEMPLATE
    assert "has no chat template" in caplog.text


def test_template_without_generation_prompt_is_refused() -> None:
    tok = build_tiny_tokenizer("{% for m in messages %}{{ m['content'] }}\n{% endfor %}")
    with pytest.raises(TunesmithError, match=r"no generation prompt.*--chat-template plain"):
        set_chat_template(tok, None, "m")


def test_truncation_cuts_the_prompt_first_and_counts_it(caplog: pytest.LogCaptureFixture) -> None:
    tok = _tokenizer(build_tiny_tokenizer().chat_template)
    long_prompt = [{"role": "user", "content": "hello how are you " * 40}, {"role": "assistant", "content": "fine"}]
    full = encode_conversation(tok, long_prompt, 10_000, False)
    enc = encode_conversation(tok, long_prompt, 32, False)
    assert enc.truncated == "prompt" and len(enc.input_ids) == 32
    answer = [t for t in full.labels if t != IGNORE]
    assert [t for t in enc.labels if t != IGNORE] == answer  # the answer survives whole, EOS included
    long_answer = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "fine thank you " * 40}]
    cut = encode_conversation(tok, long_answer, 32, False)
    assert cut.truncated == "answer" and len(cut.input_ids) == 32
    assert any(t == IGNORE for t in cut.labels[1:8]), "a cut answer keeps some of its question"
    encode_all(tok, [long_prompt, long_answer], 32, False, "chats.jsonl")
    assert "1 conversations longer than --max-length 32 lost context" in caplog.text
    assert "1 answers longer than --max-length 32 were cut short" in caplog.text


def _examples(tok, n: int = 6) -> list[dict]:
    convs = [
        [{"role": "user", "content": "hello " * (1 + 3 * i)}, {"role": "assistant", "content": "fine " * (1 + 5 * i)}]
        for i in range(n)
    ]
    return encode_all(tok, convs, 512, False, "x")


def test_packed_batch_gives_each_example_its_unpacked_loss(tiny_lm: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm).eval()
    examples = _examples(tok)
    packed = pack(examples, max_length=200)
    assert len(packed) < len(examples)
    assert sum(len(p["input_ids"]) for p in packed) == sum(len(e["input_ids"]) for e in examples)
    collate = LMCollator(tok.pad_token_id)
    with torch.no_grad():
        batch = collate(packed)
        assert "attention_mask" not in batch and "position_ids" in batch
        # use_cache=False, as in training: with a cache, transformers would not build the packed mask.
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        # Per-example losses, read off the packed rows segment by segment.
        packed_losses = []
        for row, p in enumerate(packed):
            starts = [i for i, pos in enumerate(p["position_ids"]) if pos == 0] + [len(p["input_ids"])]
            for a, b in itertools.pairwise(starts):
                labels = torch.tensor(p["labels"][a:b])
                packed_losses.append(torch.nn.functional.cross_entropy(logits[row, a : b - 1], labels[1:]).item())
        single = []
        for e in examples:
            out = model(input_ids=torch.tensor([e["input_ids"]])).logits[0]
            single.append(torch.nn.functional.cross_entropy(out[:-1], torch.tensor(e["labels"][1:])).item())
    assert sorted(packed_losses) == pytest.approx(sorted(single), abs=1e-5)
    # Without restarting positions (plain concatenation) examples would see each other: the losses differ.
    with torch.no_grad():
        joined = model(input_ids=batch["input_ids"], use_cache=False).logits
    assert not torch.allclose(joined, logits, atol=1e-4)


def test_sft_loss_counts_answer_tokens(tiny_lm: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm)
    examples = _examples(tok, 3)
    loss_sum, count = SFT().loss(model, LMCollator(tok.pad_token_id)(examples))
    assert count == sum(e["n_targets"] for e in examples)
    assert count == sum(1 for e in examples for t in e["labels"][1:] if t != IGNORE)
    assert loss_sum.item() > 0


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_accumulation_equals_one_big_batch_for_very_different_lengths(tiny_lm: str, tmp_path) -> None:
    """Dividing by the whole step's answer tokens: 1, 2 or 4 micro-batches give the same update."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.config import TrainConfig
    from tunesmith.train.loop import Trainer

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    examples = _examples(tok, 4)  # answers of 2 to 17 tokens
    lengths = sorted(e["n_targets"] for e in examples)
    assert lengths[-1] > 4 * lengths[0]
    grads = []
    for accum in (1, 2, 4):
        model = AutoModelForCausalLM.from_pretrained(tiny_lm)
        cfg = TrainConfig(
            batch_size=4, grad_accum=accum, max_steps=1, epochs=3.0, lr=1e-3, max_grad_norm=0.0, warmup_ratio=0.0
        )
        trainer = Trainer(
            model, SFT(), examples, cfg, tmp_path / f"run{accum}", torch.device("cpu"), LMCollator(0), lambda m: {}
        )
        model.train()
        trainer.model.zero_grad()
        # One step's gradient without the optimizer: the loop's own micro-batching and normalisation.
        trainer.optimizer.step = lambda: None  # type: ignore[method-assign]
        trainer.optimizer.zero_grad = lambda set_to_none=True: None  # type: ignore[method-assign]
        trainer._optimizer_step(list(range(4)), 0)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    # Reference: the mean over every answer token of the batch, computed directly.
    model = AutoModelForCausalLM.from_pretrained(tiny_lm)
    model.train()
    loss_sum, count = SFT().loss(model, LMCollator(0)(examples))
    (loss_sum / count).backward()
    reference = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    for g in grads:
        torch.testing.assert_close(g, reference, atol=1e-6, rtol=1e-4)
    # The bug it guards against: the mean of per-micro-batch means is a different gradient.
    model.zero_grad()
    for e in examples:
        s, n = SFT().loss(model, LMCollator(0)([e]))
        (s / n / 4).backward()
    wrong = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    assert not torch.allclose(wrong, reference, atol=1e-5)


def test_a_long_answer_after_a_short_question_keeps_the_question() -> None:
    tok = _tokenizer(build_tiny_tokenizer().chat_template)
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "fine thank you " * 100}]
    assert len(prompt_ids(tok, conv[:1])) < 128 // 4  # shorter than the context a cut answer keeps
    enc = encode_conversation(tok, conv, 128, False)
    assert enc.truncated == "answer" and len(enc.input_ids) == 128
    assert enc.input_ids[: len(prompt_ids(tok, conv[:1]))] == prompt_ids(tok, conv[:1])


def test_a_template_that_refuses_a_conversation_is_one_line() -> None:
    tok = _tokenizer(
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}A:{% endif %}"
    )
    with pytest.raises(TunesmithError, match=r"cannot render a system/user conversation.*System role not supported"):
        encode_conversation(tok, [{"role": "system", "content": "s"}, *CONV[1:3]], 64, False)


def test_an_answer_exactly_the_window_long_keeps_its_eos() -> None:
    tok = _tokenizer(build_tiny_tokenizer().chat_template)
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "fine thank you " * 30}]
    answer = len(encode_conversation(tok, conv, 10_000, False).input_ids) - len(prompt_ids(tok, conv[:1]))
    enc = encode_conversation(tok, conv, answer, False)
    assert enc.truncated == "prompt" and tok.eos_token_id in enc.input_ids
