"""The target-only loss: the output layer sees only the target tokens, and the loss and gradients are those of the
full logits (causal LM padded and packed, prompt tuning's virtual tokens, T5, a warm-started encoder-decoder)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from tunesmith.tasks.seq2seq import Seq2Seq, Seq2SeqCollator
from tunesmith.tasks.sft import SFT, LMCollator, encode_all, pack
from tunesmith.tasks.token_loss import IGNORE, logits_at, output_layer


def _conversations(n: int) -> list[list[dict[str, str]]]:
    return [
        [{"role": "user", "content": "hello " * (1 + 3 * i)}, {"role": "assistant", "content": "fine " * (1 + 5 * i)}]
        for i in range(n)
    ]


def _rows_seen(model: torch.nn.Module) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    """How many hidden-state rows the output layer is given on each call."""
    seen: list[int] = []
    handle = output_layer(model).register_forward_hook(
        lambda _m, _a, out: seen.append(out.reshape(-1, out.shape[-1]).shape[0])
    )
    return seen, handle


def _full_causal_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The formula the loss had before: every position's logits, shifted, summed over the targets."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    logits = model(**inputs, use_cache=False).logits[:, -batch["input_ids"].shape[1] :]
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]),
        batch["labels"][:, 1:].reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )


def _grads(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("packed", [False, True])
def test_causal_lm_loss_and_gradient_equal_the_full_logits(tiny_lm: str, packed: bool) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_lm)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm).eval()
    examples = encode_all(tok, _conversations(5), 512, False, "x")
    if packed:
        examples = pack(examples, 96)
    batch = LMCollator(tok.pad_token_id)(examples)
    n_tokens = batch["input_ids"].numel()

    full = _full_causal_loss(model, batch)
    full.backward()
    reference = _grads(model)
    model.zero_grad()
    seen, handle = _rows_seen(model)
    loss, count = SFT().loss(model, batch)
    loss.backward()
    handle.remove()

    assert count == int((batch["labels"][:, 1:] != IGNORE).sum())
    assert seen == [count] and count < n_tokens  # only the answer tokens reached the output layer
    torch.testing.assert_close(loss, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(_grads(model), reference, rtol=1e-4, atol=1e-6)


def test_prompt_tunings_virtual_tokens_are_skipped(tiny_lm: str) -> None:
    from peft import PromptTuningConfig, get_peft_model

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_lm), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    ).eval()
    batch = LMCollator(tok.pad_token_id)(encode_all(tok, _conversations(3), 512, False, "x"))
    loss, _ = SFT().loss(model, batch)
    torch.testing.assert_close(loss, _full_causal_loss(model, batch), rtol=1e-5, atol=1e-5)


def _pairs(tok) -> list[dict[str, torch.Tensor]]:
    sources = ["translate this " * (1 + i) for i in range(4)]
    targets = ["done " * (2 + 3 * i) for i in range(4)]
    return [
        {"input_ids": tok(s)["input_ids"], "labels": tok(t)["input_ids"] + [tok.eos_token_id or 1]}
        for s, t in zip(sources, targets, strict=True)
    ]


def test_t5_loss_is_the_models_own_loss_on_the_targets_alone(tiny_t5: str) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_t5)
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5).eval()
    batch = Seq2SeqCollator(tok.pad_token_id)(_pairs(tok))
    count = int((batch["labels"] != IGNORE).sum())
    reference = model(**batch).loss * count  # HF's own mean over the same targets, from the full logits
    seen, handle = _rows_seen(model)
    loss, n = Seq2Seq().loss(model, batch)
    handle.remove()
    assert n == count and seen == [count] < [batch["labels"].numel()]
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-5)


def test_warm_started_encoder_decoder_loss_is_its_own_loss(tiny_model: str) -> None:
    from transformers import EncoderDecoderModel

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(tiny_model, tiny_model).eval()
    model.config.decoder_start_token_id, model.config.pad_token_id = tok.cls_token_id, tok.pad_token_id
    batch = Seq2SeqCollator(tok.pad_token_id)(_pairs(tok))
    count = int((batch["labels"] != IGNORE).sum())
    reference = model(**batch).loss * count
    loss, n = Seq2Seq().loss(model, batch)
    assert n == count
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-5)


def test_no_targets_gives_zero_loss_that_still_backpropagates(tiny_lm: str) -> None:
    """A rank whose share holds no answer token still joins DDP's gradient exchange."""
    tok = AutoTokenizer.from_pretrained(tiny_lm)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm)
    batch = LMCollator(tok.pad_token_id)(encode_all(tok, _conversations(2), 512, False, "x"))
    batch["labels"][:] = IGNORE
    loss, count = SFT().loss(model, batch)
    loss.backward()
    assert count == 0 and loss.item() == 0.0
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters() if p.requires_grad)


def test_the_hook_is_gone_after_an_error(tiny_lm: str) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_lm)
    ids = torch.tensor([[5, 6, 7]])
    with pytest.raises(RuntimeError), logits_at(model, torch.tensor([[True, False, True]])):
        raise RuntimeError("a step that failed")
    assert model(input_ids=ids).logits.shape[:2] == (1, 3)
