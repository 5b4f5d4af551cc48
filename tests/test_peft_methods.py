"""Every --method trains a step and changes only the weights it should; adapters round-trip and merge exactly."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunesmith.config import MethodConfig, ModelConfig
from tunesmith.errors import TunesmithError
from tunesmith.models.loading import apply_method, load_classifier, load_lm, load_trained
from tunesmith.tasks.sft import SFT, LMCollator, encode_all

CONVS = [
    [{"role": "user", "content": "hello how are you"}, {"role": "assistant", "content": "I am fine, thank you"}],
    [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "今天天气很好"}],
]


def _batch(tokenizer):
    return LMCollator(tokenizer.pad_token_id)(encode_all(tokenizer, CONVS, 64, False, "x"))


def _train_step(model, batch) -> None:
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    loss_sum, count = SFT().loss(model, batch)
    (loss_sum / count).backward()
    optimizer.step()


@pytest.mark.parametrize(
    ("method", "trained"),
    [
        ("lora", ("lora_A", "lora_B")),
        ("dora", ("lora_A", "lora_B", "lora_magnitude_vector")),
        ("rslora", ("lora_A", "lora_B")),
        ("ia3", ("ia3_l",)),
        ("prompt_tuning", ("prompt_encoder",)),
        ("prefix_tuning", ("prompt_encoder",)),
    ],
)
def test_each_method_trains_only_its_own_weights(tiny_lm: str, method: str, trained: tuple[str, ...]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_lm)
    model = apply_method(base, MethodConfig(method=method, num_virtual_tokens=4), None, "CAUSAL_LM")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(any(key in n for key in trained) for n in trainable), sorted(trainable)[:5]
    total = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for n, p in model.named_parameters() if n in trainable) < 0.5 * total
    _train_step(model, _batch(tokenizer))
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed, f"{method}: one step changed nothing"
    assert changed <= trainable, f"{method} changed frozen weights: {sorted(changed - trainable)[:3]}"


def test_lora_targets_every_linear_layer_of_a_causal_lm_by_default(tiny_lm: str) -> None:
    model = apply_method(AutoModelForCausalLM.from_pretrained(tiny_lm), MethodConfig(method="lora"), None, "CAUSAL_LM")
    adapted = {n.split(".lora_A")[0].split(".")[-1] for n, _ in model.named_parameters() if "lora_A" in n}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= adapted
    assert not any("lm_head" in n and "lora" in n for n, _ in model.named_parameters())


def test_unknown_lora_target_is_one_clear_line(tiny_lm: str) -> None:
    method = MethodConfig(method="lora", lora_target_modules=["query_typo"])
    with pytest.raises(TunesmithError, match="--lora-target"):
        apply_method(AutoModelForCausalLM.from_pretrained(tiny_lm), method, None, "CAUSAL_LM")


def test_qlora_is_refused_on_cpu_with_advice(tiny_lm: str) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(TunesmithError, match="needs a CUDA GPU; use --method lora"):
        load_lm(tiny_lm, ModelConfig(name=tiny_lm), "sft", "qlora")


@pytest.mark.parametrize("method", ["lora", "dora", "ia3"])
def test_adapter_save_load_and_merge_give_identical_logits(tiny_lm: str, tmp_path, method: str) -> None:
    from peft import PeftModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    batch = _batch(tokenizer)
    torch.manual_seed(0)
    model = apply_method(AutoModelForCausalLM.from_pretrained(tiny_lm), MethodConfig(method=method), None, "CAUSAL_LM")
    _train_step(model, batch)  # LoRA's B starts at zero: train so the adapter does something
    model.eval()
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        trained = model(**inputs).logits
        with model.disable_adapter():
            assert not torch.allclose(model(**inputs).logits, trained, atol=1e-4), "the adapter changed nothing"
    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    # Plain peft loads it: nothing tunesmith-specific in the saved format.
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_lm), tmp_path / "adapter").eval()
    merged = reloaded.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        torch.testing.assert_close(
            PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_lm), tmp_path / "adapter")(
                **inputs
            ).logits,
            trained,
        )
        torch.testing.assert_close(plain(**inputs).logits, trained, atol=1e-5, rtol=1e-4)


# --- weights the base checkpoint lacks ---------------------------------------------------------------


@pytest.fixture(scope="module")
def bert_without_pooler(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny BERT saved without its pooler, as many encoder checkpoints are: a classifier on it gets a new one."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("bert-no-pooler")
    config = BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    return str(folder)


HEAD = {"num_labels": 3}


def _classifier_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 64, (6, 10), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 1, 2, 0, 1, 2])}


@pytest.mark.parametrize("method", ["lora", "ia3", "prompt_tuning"])
def test_a_new_pooler_trains_saves_and_reloads_exactly(bert_without_pooler: str, tmp_path, method: str) -> None:
    """Fails before: peft trained and saved only `classifier`; the new pooler stayed random and frozen, and
    every load drew another one, so the reloaded run scored differently from the trained one, and each load
    differently from the last."""
    cfg = ModelConfig(name=bert_without_pooler)
    torch.manual_seed(0)
    model = apply_method(load_classifier(bert_without_pooler, HEAD, cfg, 0), MethodConfig(method=method), None)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("pooler.dense" in n for n in trainable), sorted(trainable)
    pooler_before = {n: p.detach().clone() for n, p in model.named_parameters() if "pooler.dense" in n}
    batch = _classifier_batch()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    params = dict(model.named_parameters())
    assert any(not torch.equal(params[n], before) for n, before in pooler_before.items()), "the pooler did not train"
    model.eval()
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        trained = model(**inputs).logits
    model.save_pretrained(tmp_path / "model")

    loads = []
    for seed in (1, 2):  # each load initialises the missing weights from another draw
        torch.manual_seed(seed)
        with torch.no_grad():
            loaded = load_trained(tmp_path / "model", bert_without_pooler, HEAD, cfg, method).eval()
            loads.append(loaded(**inputs).logits)
    assert torch.equal(loads[0], trained) and torch.equal(loads[1], trained)


def test_an_adapter_without_the_new_weights_is_refused_at_load(bert_without_pooler: str, tmp_path) -> None:
    """Fails before: such an adapter (as older tunesmith saved it) loaded, with a random pooler each time."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(bert_without_pooler, **HEAD)
    get_peft_model(base, LoraConfig(task_type="SEQ_CLS")).save_pretrained(tmp_path / "model")
    with pytest.raises(TunesmithError) as caught:
        load_trained(tmp_path / "model", bert_without_pooler, HEAD, ModelConfig(name=bert_without_pooler), "lora")
    message = str(caught.value)
    assert "\n" not in message and "bert.pooler.dense" in message and "train this run again" in message
