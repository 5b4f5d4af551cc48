"""Trim a fine-tuned encoder classifier's vocabulary to the tokens its data uses, with a tokenizer to match.

multilingual-e5-small keeps ~81% of its 118M weights in a 250,002-row embedding table, while one user's domain
touches a few tens of thousands of tokens. `trim_vocabulary` keeps

    every special or added token (and any token id the model config names),
    every token id the given texts encode to,
    a safety set: every single-character piece ("a", "▁a", "物"; WordPiece "a" and "##a"), so unseen text still
    splits into kept pieces rather than into one unknown token per word,

slices the embedding rows to those ids (original order, so pad/unk/cls stay low) and rewrites the tokenizer's
`tokenizer.json` to number them 0..n-1. Texts whose pieces were all kept encode exactly as before: Unigram's best
segmentation and WordPiece's longest match both survive removing pieces they did not use. Only Unigram
(SentencePiece) and WordPiece tokenizers are rewritten; BPE merges reference pieces by string and removing pieces
breaks merge chains, so it is refused rather than silently changing tokenisation.

Models with output embeddings (an MLM or LM head) are refused: their head rows would need slicing too and the
tying rules differ per architecture; classifiers and plain encoders have none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from tunesmith.errors import TunesmithError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

_METASPACE = "\u2581"  # SentencePiece's word-start marker, part of the piece text in Unigram vocabularies
_SUPPORTED = "vocabulary trimming supports Unigram (SentencePiece: XLM-R, e5) and WordPiece (BERT) tokenizers"
_CONFIG_TOKEN_IDS = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id")
_BATCH = 1024  # texts per tokenizer call: bounds memory on large data without slowing the fast tokenizer


@dataclass
class Trimmed:
    model: nn.Module  # same class, embedding rows sliced, config.vocab_size updated
    tokenizer: PreTrainedTokenizerFast  # rewritten tokenizer.json, ids 0..n-1
    kept: int
    before: int
    from_texts: int  # kept because the texts use them (and not already special)
    from_safety: int  # kept only because of the single-character safety set
    kept_ids: list[int]  # new id i is old id kept_ids[i]: maps trimmed ids back to the original model's


def trim_vocabulary(model: nn.Module, tokenizer: Any, texts: list[str]) -> Trimmed:
    """The model and tokenizer reduced to the special tokens, the tokens of `texts` and single-character pieces.

    The model is trimmed in place (a copy would double a 118M model's memory) and returned in `Trimmed.model`;
    the tokenizer passed in is left as it was.
    """
    before = _embedding_rows(model)
    spec = _backend_spec(tokenizer)
    pieces = _model_pieces(spec["model"])
    if len(tokenizer) > before:
        raise TunesmithError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's embedding table only {before} rows; "
            "pass the tokenizer the model was trained with"
        )
    special = _special_ids(tokenizer, spec, model, before)
    used = _text_ids(tokenizer, texts) - special
    safety = _safety_ids(spec["model"], pieces) - special - used
    kept_ids = sorted(special | used | safety)
    new_tok = _rewrite_tokenizer(tokenizer, spec, kept_ids)
    _trim_model(model, kept_ids)
    return Trimmed(model, new_tok, len(kept_ids), before, len(used), len(safety), kept_ids)


def _backend_spec(tokenizer: Any) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TunesmithError(f"{_SUPPORTED}, as a fast (tokenizers-backed) tokenizer; this one has no tokenizer.json")
    spec = json.loads(backend.to_str())
    if spec["model"].get("type") not in ("Unigram", "WordPiece"):
        raise TunesmithError(f"{_SUPPORTED}; this one is {spec['model'].get('type')}")
    return spec


def _model_pieces(model_spec: dict) -> dict[int, str]:
    """Piece text by id for the tokenizer model's own vocabulary (added-only tokens are not in it)."""
    if model_spec["type"] == "Unigram":
        return {i: piece for i, (piece, _score) in enumerate(model_spec["vocab"])}
    return {i: piece for piece, i in model_spec["vocab"].items()}


def _embedding_rows(model: nn.Module) -> int:
    """Rows of the input table, after refusing models this module cannot trim (checked before any slow work)."""
    if model.get_output_embeddings() is not None:
        raise TunesmithError(
            "vocabulary trimming is for classifiers and plain encoders; this model has a language-model head "
            "(output embeddings): load it with AutoModelForSequenceClassification"
        )
    embedding = model.get_input_embeddings()
    if type(embedding) is not nn.Embedding:
        # a subclass may scale or offset lookups; a plain replacement would silently drop that
        raise TunesmithError(f"vocabulary trimming needs a plain nn.Embedding input table, not {type(embedding)}")
    return embedding.num_embeddings


def _special_ids(tokenizer: Any, spec: dict, model: nn.Module, rows: int) -> set[int]:
    ids = {token["id"] for token in spec["added_tokens"]} | set(tokenizer.all_special_ids)
    # the config's ids drive generation defaults and XLM-R's position numbering: they must survive
    ids |= {i for name in _CONFIG_TOKEN_IDS if isinstance(i := getattr(model.config, name, None), int)}
    unk = spec["model"].get("unk_id") if spec["model"]["type"] == "Unigram" else None
    if unk is not None:
        ids.add(unk)
    return {i for i in ids if 0 <= i < rows}


def _text_ids(tokenizer: Any, texts: list[str]) -> set[int]:
    ids: set[int] = set()
    for start in range(0, len(texts), _BATCH):
        # no truncation: a long text's tail pieces are kept too, a superset of what training saw
        batch = tokenizer(texts[start : start + _BATCH], truncation=False, verbose=False)["input_ids"]
        for row in batch:
            ids.update(row)
    return ids


def _safety_ids(model_spec: dict, pieces: dict[int, str]) -> set[int]:
    if model_spec["type"] == "WordPiece":
        prefix = model_spec.get("continuing_subword_prefix") or "##"
        return {i for i, p in pieces.items() if len(p) == 1 or (p.startswith(prefix) and len(p) == len(prefix) + 1)}
    ids = {i for i, p in pieces.items() if len(p.removeprefix(_METASPACE)) <= 1}  # "▁" alone starts a word too
    scores = model_spec["vocab"]
    # Unigram scores unknown characters relative to the vocabulary's lowest score: keep that piece so unk costs stay
    ids.add(min(range(len(scores)), key=lambda i: scores[i][1]))
    if model_spec.get("byte_fallback"):
        ids |= {i for i, p in pieces.items() if len(p) == 6 and p.startswith("<0x") and p.endswith(">")}
    return ids


def _rewrite_tokenizer(tokenizer: Any, spec: dict, kept_ids: list[int]) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    new_id = {old: new for new, old in enumerate(kept_ids)}
    # spec was parsed from the backend for this call alone (json.loads is its copy), so it is edited in place
    spec["model"] = _remapped_model(spec["model"], kept_ids, new_id)
    for token in spec["added_tokens"]:
        token["id"] = new_id[token["id"]]
    if spec.get("post_processor"):
        _remap_post_processor(spec["post_processor"], new_id)
    if spec.get("padding") and spec["padding"].get("pad_id") in new_id:
        spec["padding"]["pad_id"] = new_id[spec["padding"]["pad_id"]]
    backend = Tokenizer.from_str(json.dumps(spec, ensure_ascii=False))
    decoder = tokenizer.added_tokens_decoder
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        added_tokens_decoder={new_id[i]: token for i, token in decoder.items() if i in new_id},
        model_max_length=tokenizer.model_max_length,
        padding_side=tokenizer.padding_side,
        truncation_side=tokenizer.truncation_side,
        model_input_names=list(tokenizer.model_input_names),
        **_special_token_kwargs(tokenizer),
    )
    if getattr(tokenizer, "chat_template", None):
        wrapped.chat_template = tokenizer.chat_template
    _check_ids(tokenizer, wrapped, kept_ids)
    return wrapped


def _remapped_model(model_spec: dict, kept_ids: list[int], new_id: dict[int, int]) -> dict:
    if model_spec["type"] == "WordPiece":
        return {**model_spec, "vocab": {piece: new_id[i] for piece, i in model_spec["vocab"].items() if i in new_id}}
    vocab = model_spec["vocab"]
    # ids past the model's vocabulary belong to added-only tokens, which added_tokens carries
    new = {**model_spec, "vocab": [vocab[old] for old in kept_ids if old < len(vocab)]}
    if model_spec.get("unk_id") is not None:
        new["unk_id"] = new_id[model_spec["unk_id"]]
    return new


def _remap_post_processor(processor: dict, new_id: dict[int, int]) -> None:
    kind = processor.get("type")
    if kind == "Sequence":
        for inner in processor.get("processors", []):
            _remap_post_processor(inner, new_id)
    elif kind == "TemplateProcessing":
        for token in processor.get("special_tokens", {}).values():
            token["ids"] = [new_id[i] for i in token["ids"]]
    elif kind in ("RobertaProcessing", "BertProcessing"):
        for key in ("sep", "cls"):
            piece, old = processor[key]
            processor[key] = [piece, new_id[old]]


def _special_token_kwargs(tokenizer: Any) -> dict[str, Any]:
    """The named special tokens (and v5's extra ones), so the wrapper reports the same pad/unk/cls as the original."""
    kwargs: dict[str, Any] = dict(tokenizer.special_tokens_map)
    extra = getattr(tokenizer, "extra_special_tokens", None)
    if extra:
        kwargs["extra_special_tokens"] = extra
    return kwargs


def _check_ids(old: Any, new: PreTrainedTokenizerFast, kept_ids: list[int]) -> None:
    # a wrong id here would pair every later text with the wrong embedding row, silently
    if len(new) != len(kept_ids):
        raise TunesmithError(f"rewritten tokenizer has {len(new)} tokens, expected {len(kept_ids)}; please report this")
    old_backend, new_backend = old.backend_tokenizer, new.backend_tokenizer
    for i, old_i in enumerate(kept_ids):
        if new_backend.id_to_token(i) != old_backend.id_to_token(old_i):
            raise TunesmithError(f"rewritten tokenizer maps id {i} to the wrong piece; please report this")


def _trim_model(model: nn.Module, kept_ids: list[int]) -> None:
    new_id = {old: new for new, old in enumerate(kept_ids)}
    old = model.get_input_embeddings()
    index = torch.tensor(kept_ids, device=old.weight.device)
    pad = None if old.padding_idx is None else new_id[old.padding_idx]
    _check_position_padding(model, old, pad)
    embedding = nn.Embedding.from_pretrained(
        old.weight.detach()[index].clone(),
        freeze=not old.weight.requires_grad,
        padding_idx=pad,
        max_norm=old.max_norm,
        norm_type=old.norm_type,
        scale_grad_by_freq=old.scale_grad_by_freq,
        sparse=old.sparse,
    )
    model.set_input_embeddings(embedding)
    model.config.vocab_size = len(kept_ids)
    for name in _CONFIG_TOKEN_IDS:
        value = getattr(model.config, name, None)
        if isinstance(value, int) and value in new_id:
            setattr(model.config, name, new_id[value])


def _check_position_padding(model: nn.Module, embedding: nn.Embedding, pad: int | None) -> None:
    """RoBERTa-style embeddings number positions from pad id + 1, so a moved pad id would shift every position."""
    for parent in model.modules():
        if isinstance(parent, nn.Embedding) or not isinstance(getattr(parent, "padding_idx", None), int):
            continue
        if any(child is embedding for child in parent.children()) and parent.padding_idx != pad:
            raise TunesmithError(
                f"the pad token would move from id {parent.padding_idx} to {pad}, which shifts this model's "
                "position numbering; keep the tokens before the pad token"
            )
