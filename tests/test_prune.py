"""Structured pruning: layers and FFN neurons come out for real, and the result reloads as a plain folder."""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    PreTrainedConfig,
    PreTrainedModel,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
)

from conftest import INTENTS
from tunesmith.errors import TunesmithError
from tunesmith.models.prune import (
    encoder_layers,
    evenly_spaced,
    ffn_importance,
    keep_layers,
    layer_importance,
    prune_ffn,
)

Batch = dict[str, Tensor]
SMALL = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 100, "num_labels": 3}


def classify_loss(model: nn.Module, batch: Batch) -> Tensor:
    return model(**batch).loss


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def logits(model: nn.Module, batch: Batch) -> Tensor:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    model.eval()
    with torch.no_grad():
        return model(**inputs).logits


def four_layers(kind: str, **overrides: object) -> PreTrainedModel:
    """A random 4-layer classifier of either architecture, small enough to build in milliseconds."""
    torch.manual_seed(0)
    if kind == "bert":
        return BertForSequenceClassification(BertConfig(num_hidden_layers=4, **SMALL, **overrides)).eval()
    # XLM-R counts positions from pad_token_id + 1, hence the extra two.
    config = XLMRobertaConfig(num_hidden_layers=4, max_position_embeddings=66, pad_token_id=1, **SMALL, **overrides)
    return XLMRobertaForSequenceClassification(config).eval()


def random_batch(seed: int = 0) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, SMALL["vocab_size"], (3, 10), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # padding, so the attention mask takes part
    ids[1, 6:] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 2])}


def only_layers(model: PreTrainedModel, layers: list[int]) -> PreTrainedModel:
    """The reference: a fresh model built for len(layers) layers, loaded with just those layers' weights."""
    config: PreTrainedConfig = copy.deepcopy(model.config)
    config.num_hidden_layers = len(layers)
    new_index = {old: new for new, old in enumerate(layers)}
    state = {}
    for key, value in model.state_dict().items():
        found = re.search(r"encoder\.layer\.(\d+)\.", key)
        if found is None:
            state[key] = value
        elif int(found[1]) in new_index:
            state[key.replace(found[0], f"encoder.layer.{new_index[int(found[1])]}.")] = value
    reference = type(model)(config).eval()
    reference.load_state_dict(state)
    return reference


@pytest.fixture(scope="module")
def intent_batches(tiny_model: str) -> list[Batch]:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    labels = {name: i for i, name in enumerate(INTENTS)}
    rows = [(text, labels[name]) for name, texts in INTENTS.items() for text in texts]
    batches = []
    for start in (0, 1):  # two interleaved batches, each holding every intent
        texts, ys = zip(*rows[start::2], strict=True)
        batch = tokenizer(list(texts), padding=True, return_tensors="pt")
        batches.append({**batch, "labels": torch.tensor(ys)})
    return batches


@pytest.fixture(scope="module")
def tuned_state(tiny_model: str, intent_batches: list[Batch]) -> dict[str, Tensor]:
    """The tiny random BERT trained briefly on the intents, so neuron importance measures something learned.

    At BERT's init scale (std 0.02) a 32-wide FFN barely moves the residual stream and the fine-tune learns
    around it (skipping a layer then costs ~nothing); scaled up tenfold, the FFNs carry what is learned.
    """
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=3)
    with torch.no_grad():
        for layer in encoder_layers(model):
            layer.intermediate.dense.weight.mul_(10)
            layer.output.dense.weight.mul_(10)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(60):
        optimizer.zero_grad()
        classify_loss(model, intent_batches[step % 2]).backward()
        optimizer.step()
    return copy.deepcopy(model.state_dict())


@pytest.fixture
def tuned(tiny_model: str, tuned_state: dict[str, Tensor]) -> Callable[[], PreTrainedModel]:
    def build() -> PreTrainedModel:
        model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=3)
        model.load_state_dict(tuned_state)
        return model.eval()

    return build


def mean_loss(model: nn.Module, batches: list[Batch]) -> float:
    model.eval()
    with torch.no_grad():
        return sum(float(classify_loss(model, b)) for b in batches) / len(batches)


# --- which architectures -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bert", "xlmr"])
def test_encoder_layers_finds_the_blocks(kind: str) -> None:
    model = four_layers(kind)
    assert encoder_layers(model) is model.base_model.encoder.layer
    assert len(encoder_layers(model)) == 4


def test_an_unknown_architecture_is_one_clear_error() -> None:
    distil = DistilBertForSequenceClassification(
        DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=2, hidden_dim=64)
    )
    for call in (
        lambda: encoder_layers(distil),
        lambda: keep_layers(distil, [0]),
        lambda: prune_ffn(distil, 0.5, []),
        lambda: encoder_layers(nn.Linear(2, 2)),
    ):
        with pytest.raises(TunesmithError, match="BERT-style encoders") as caught:
            call()
        assert "\n" not in str(caught.value)
    with pytest.raises(TunesmithError, match="DistilBertForSequenceClassification"):
        encoder_layers(distil)


# --- evenly_spaced -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "keep", "expected"),
    [
        (12, 6, [0, 2, 4, 7, 9, 11]),  # DistilBERT's own choice from BERT-base
        (12, 12, list(range(12))),
        (12, 2, [0, 11]),
        (12, 1, [0]),
        (12, 4, [0, 4, 7, 11]),
        (6, 3, [0, 3, 5]),
        (1, 1, [0]),
    ],
)
def test_evenly_spaced_values(total: int, keep: int, expected: list[int]) -> None:
    assert evenly_spaced(total, keep) == expected


def test_evenly_spaced_always_spans_first_to_last() -> None:
    for total in range(1, 30):
        for keep in range(1, total + 1):
            chosen = evenly_spaced(total, keep)
            assert len(chosen) == keep and chosen == sorted(set(chosen)), (total, keep)
            assert chosen[0] == 0 and (keep == 1 or chosen[-1] == total - 1), (total, keep)


@pytest.mark.parametrize(("total", "keep"), [(12, 0), (12, 13), (0, 0), (4, -1)])
def test_evenly_spaced_rejects_impossible_counts(total: int, keep: int) -> None:
    with pytest.raises(TunesmithError, match="keep must be between 1 and"):
        evenly_spaced(total, keep)


# --- keep_layers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bert", "xlmr"])
def test_keeping_every_layer_changes_nothing(kind: str) -> None:
    model = four_layers(kind)
    batch = random_batch()
    before = logits(model, batch)
    keep_layers(model, [0, 1, 2, 3])
    assert torch.equal(logits(model, batch), before)


@pytest.mark.parametrize("kind", ["bert", "xlmr"])
def test_kept_layers_run_exactly_as_a_model_of_only_those_layers(kind: str, tmp_path: Path) -> None:
    model = four_layers(kind)
    batch = random_batch()
    reference = logits(only_layers(model, [0, 2, 3]), batch)
    full_params = n_params(model)

    keep_layers(model, [0, 2, 3])
    assert model.config.num_hidden_layers == 3 and len(encoder_layers(model)) == 3
    assert n_params(model) < full_params
    assert [layer.attention.self.layer_idx for layer in encoder_layers(model)] == [0, 1, 2]
    torch.testing.assert_close(logits(model, batch), reference, rtol=0, atol=1e-6)

    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["num_hidden_layers"] == 3
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert torch.equal(logits(reloaded, batch), logits(model, batch))


def test_keep_first_layer_of_the_tiny_model(tiny_model: str, intent_batches: list[Batch], tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=3).eval()
    reference = logits(only_layers(model, [0]), intent_batches[0])
    assert not torch.allclose(reference, logits(model, intent_batches[0]))  # layer 1 did matter

    keep_layers(model, [0])
    torch.testing.assert_close(logits(model, intent_batches[0]), reference, rtol=0, atol=1e-6)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert reloaded.config.num_hidden_layers == 1
    assert torch.equal(logits(reloaded, intent_batches[0]), logits(model, intent_batches[0]))


def test_per_layer_config_lists_shrink_with_the_layers(tmp_path: Path) -> None:
    model = four_layers("bert", layer_types=["full_attention"] * 4)
    keep_layers(model, evenly_spaced(4, 2))
    assert model.config.layer_types == ["full_attention"] * 2
    model.save_pretrained(tmp_path)  # save validates num_hidden_layers against layer_types
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path).config.num_hidden_layers == 2


@pytest.mark.parametrize("layers", [[], [1, 0], [0, 0], [4], [-1]])
def test_keep_layers_rejects_bad_lists(layers: list[int]) -> None:
    model = four_layers("bert")
    with pytest.raises(TunesmithError, match="distinct, increasing"):
        keep_layers(model, layers)
    assert len(encoder_layers(model)) == 4


# --- importance --------------------------------------------------------------------------------------------


def test_layer_importance_scores_each_layer_and_puts_it_back(
    tuned: Callable[[], PreTrainedModel], intent_batches: list[Batch]
) -> None:
    model = tuned()
    model.train()
    blocks = list(encoder_layers(model))
    before = logits(model, intent_batches[0])
    model.train()

    scores = layer_importance(model, iter(intent_batches), classify_loss)  # a one-shot iterator is enough
    assert len(scores) == 2 and all(math.isfinite(s) for s in scores)
    assert max(scores) > 0  # the trained model needs its layers
    assert not model.training
    assert list(encoder_layers(model)) == blocks
    assert torch.equal(logits(model, intent_batches[0]), before)


def test_ffn_importance_is_per_neuron_and_leaves_no_trace(
    tuned: Callable[[], PreTrainedModel], intent_batches: list[Batch]
) -> None:
    model = tuned()
    model.train()
    model.classifier.weight.requires_grad_(False)
    wanted = {name: p.requires_grad for name, p in model.named_parameters()}

    scores = ffn_importance(model, intent_batches, classify_loss)
    assert [tuple(s.shape) for s in scores] == [(64,), (64,)]
    assert all(torch.isfinite(s).all() and (s >= 0).all() and s.sum() > 0 for s in scores)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    assert {name: p.requires_grad for name, p in model.named_parameters()} == wanted
    # Same batches, same scores: dropout was off.
    assert all(
        torch.equal(a, b) for a, b in zip(scores, ffn_importance(model, intent_batches, classify_loss), strict=True)
    )


def test_ffn_importance_needs_a_batch(tuned: Callable[[], PreTrainedModel]) -> None:
    with pytest.raises(TunesmithError, match="at least one batch"):
        ffn_importance(tuned(), [], classify_loss)


# --- prune_ffn ---------------------------------------------------------------------------------------------


def test_keeping_every_neuron_changes_nothing(
    tuned: Callable[[], PreTrainedModel], intent_batches: list[Batch]
) -> None:
    model = tuned()
    before = logits(model, intent_batches[0])
    prune_ffn(model, 1.0, ffn_importance(model, intent_batches, classify_loss))
    assert model.config.intermediate_size == 64
    assert torch.equal(logits(model, intent_batches[0]), before)


def test_half_the_neurons_reload_as_a_plain_folder(
    tuned: Callable[[], PreTrainedModel], intent_batches: list[Batch], tmp_path: Path
) -> None:
    model = tuned()
    full_params = n_params(model)
    prune_ffn(model, 0.5, ffn_importance(model, intent_batches, classify_loss))

    assert model.config.intermediate_size == 32
    for layer in encoder_layers(model):
        assert tuple(layer.intermediate.dense.weight.shape) == (32, 32)
        assert tuple(layer.intermediate.dense.bias.shape) == (32,)
        assert tuple(layer.output.dense.weight.shape) == (32, 32)
    assert n_params(model) == full_params - 2 * (32 * 32 + 32 + 32 * 32)

    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert reloaded.config.intermediate_size == 32
    for batch in intent_batches:
        assert torch.equal(logits(reloaded, batch), logits(model, batch))


@pytest.mark.parametrize("kind", ["bert", "xlmr"])
def test_layers_and_neurons_prune_together_and_reload(kind: str, tmp_path: Path) -> None:
    model = four_layers(kind)
    batch = random_batch()
    keep_layers(model, evenly_spaced(4, 2))
    prune_ffn(model, 0.25, ffn_importance(model, [batch], classify_loss))
    assert (model.config.num_hidden_layers, model.config.intermediate_size) == (2, 16)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert torch.equal(logits(reloaded, batch), logits(model, batch))


def test_keeping_the_important_neurons_costs_less_loss(
    tuned: Callable[[], PreTrainedModel], intent_batches: list[Batch]
) -> None:
    model = tuned()
    trained_loss = mean_loss(model, intent_batches)
    scores = ffn_importance(model, intent_batches, classify_loss)

    important, unimportant = tuned(), tuned()
    prune_ffn(important, 0.5, scores)
    prune_ffn(unimportant, 0.5, [-s for s in scores])  # keeps the least important half
    kept_best, kept_worst = mean_loss(important, intent_batches), mean_loss(unimportant, intent_batches)
    assert trained_loss < 0.8  # well under chance (ln 3 = 1.1): the fine-tune learned something to lose
    assert kept_best < kept_worst
    assert kept_best - trained_loss < (kept_worst - trained_loss) / 2


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_prune_ffn_rejects_fractions_outside_zero_to_one(fraction: float) -> None:
    model = four_layers("bert")
    with pytest.raises(TunesmithError, match="keep_fraction"):
        prune_ffn(model, fraction, [torch.ones(64)] * 4)


def test_prune_ffn_wants_one_score_per_neuron_per_layer() -> None:
    model = four_layers("bert")
    with pytest.raises(TunesmithError, match="importance has 2 entries"):
        prune_ffn(model, 0.5, [torch.ones(64)] * 2)
    with pytest.raises(TunesmithError, match="expected 64 FFN neurons"):
        prune_ffn(model, 0.5, [torch.ones(63)] * 4)
    assert model.config.intermediate_size == 64
