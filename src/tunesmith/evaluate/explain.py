"""Why did it predict that: integrated gradients (captum) on the token embeddings of a fine-tuned classifier.

Each token's share of the predicted probability (a regression's value) is the integral of the gradient along
the straight line from a reference text, where every word is replaced by a neutral token, to the text
itself. The shares add up to the score's change from the reference to the text, less `delta`, which says how
far the path's integral is from exact (more steps lower it). Sub-word tokens are joined back into the
text's own characters by their offsets, so a Chinese character split into several byte tokens is one piece.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tunesmith.errors import TunesmithError

STEPS = 32  # points on the path to start with; doubled while the integral is off by more than TOLERANCE
MAX_STEPS = 256
# A saturated softmax turns sharply along the path, and 32 points then missed most of a 0.75 change of
# probability on a demo review (delta -0.64; 128 points: +0.04).
TOLERANCE = 0.05


@dataclass
class Piece:
    start: int
    end: int
    text: str
    attribution: float


@dataclass
class Explanation:
    text: str
    target: str  # the label (or "value") whose score is explained
    score: float  # that score on the text
    reference_score: float  # and on the reference, every word replaced by a neutral token
    delta: float  # sum of attributions minus (score - reference_score): the integral's error
    pieces: list[Piece] = field(default_factory=list)

    def top(self, n: int = 5) -> tuple[list[Piece], list[Piece]]:
        """The pieces that pushed toward the target most, and those that pushed away most."""
        ranked = sorted(self.pieces, key=lambda p: -p.attribution)
        return [p for p in ranked[:n] if p.attribution > 0], [p for p in ranked[::-1][:n] if p.attribution < 0]


def _outputs(task: Any, logits: torch.Tensor) -> torch.Tensor:
    """The scores a user reads, differentiably: probabilities, or the value in the label's own units."""
    if task.name == "classification":
        return torch.softmax(logits.float(), -1)
    if task.name == "multilabel":
        return torch.sigmoid(logits.float())
    return logits.float() * task.std + task.mean


def _reference_token(tokenizer: Any) -> int:
    """The neutral token that replaces every word of the reference text. Not padding, where another will do:
    RoBERTa-style models number positions by the pad id, and a decoder's classifier finds its last real token
    by it, so a padded reference would be scored as another sequence than the one the path starts from."""
    for candidate in (tokenizer.unk_token_id, tokenizer.mask_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id):
        if candidate is not None and candidate != tokenizer.pad_token_id:
            return candidate
    return tokenizer.pad_token_id


def explain_texts(
    model: nn.Module,
    tokenizer: Any,
    task: Any,
    texts: list[str],
    max_length: int,
    device: torch.device,
    target: str | None = None,
    steps: int = STEPS,
    max_steps: int = MAX_STEPS,
) -> list[Explanation]:
    """An explanation of each text's predicted label (or of `target`, a label name, for every text).

    Each starts with `steps` points on the path, doubled up to `max_steps` while |delta| exceeds TOLERANCE."""
    from captum.attr import LayerIntegratedGradients

    if task.name not in ("classification", "multilabel", "regression"):
        raise TunesmithError(f"explain covers classification, multilabel and regression runs, not {task.name}")
    if not getattr(tokenizer, "is_fast", False):
        raise TunesmithError("explain needs a fast tokenizer (with character offsets); this run's tokenizer is slow")
    labels = list(getattr(task, "labels", None) or ["value"])
    if target is not None and target not in labels:
        raise TunesmithError(f"--target {target!r} is not one of this run's labels: {', '.join(labels)}")
    model.eval()
    embeddings = model.get_input_embeddings()

    def forward(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return _outputs(task, model(input_ids=ids, attention_mask=mask).logits)

    integrated = LayerIntegratedGradients(forward, embeddings)
    reference = _reference_token(tokenizer)
    out = []
    for text in texts:
        enc = tokenizer(text, truncation=True, max_length=max_length, return_offsets_mapping=True)
        ids = torch.tensor([enc["input_ids"]], device=device)
        mask = torch.ones_like(ids)
        special = torch.tensor([tokenizer.get_special_tokens_mask(enc["input_ids"], already_has_special_tokens=True)])
        baseline = torch.where(special.to(device).bool(), ids, torch.full_like(ids, reference))
        with torch.no_grad():
            scores, reference_scores = forward(ids, mask)[0], forward(baseline, mask)[0]
        k = labels.index(target) if target is not None else int(scores.argmax()) if len(labels) > 1 else 0
        n = steps
        while True:
            attributions, delta = integrated.attribute(
                ids,
                baselines=baseline,
                additional_forward_args=(mask,),
                target=k,
                n_steps=n,
                internal_batch_size=min(n, 64),
                return_convergence_delta=True,
            )
            if abs(float(delta[0])) <= TOLERANCE or n * 2 > max(max_steps, steps):
                break
            n *= 2
        per_token = attributions.sum(-1)[0].detach().float().cpu().tolist()
        out.append(
            Explanation(
                text=text,
                target=labels[k],
                score=float(scores[k]),
                reference_score=float(reference_scores[k]),
                delta=float(delta[0]),
                pieces=_pieces(text, enc["offset_mapping"], per_token, special[0].tolist()),
            )
        )
    return out


def _pieces(text: str, offsets: list[tuple[int, int]], values: list[float], special: list[int]) -> list[Piece]:
    """Tokens joined into spans of the text: tokens whose character ranges overlap (one character in several
    byte tokens) become one piece, and special tokens, which cover no character, are left out."""
    pieces: list[Piece] = []
    for (start, end), value, is_special in zip(offsets, values, special, strict=True):
        if is_special or end <= start:
            continue
        if pieces and start < pieces[-1].end:
            last = pieces[-1]
            last.end, last.attribution = max(last.end, end), last.attribution + value
            last.text = text[last.start : last.end]
        else:
            pieces.append(Piece(start, end, text[start:end], value))
    return pieces


def as_text(e: Explanation, n: int = 5) -> str:
    """A few lines for the terminal: the score, then the pieces that pushed toward it and away from it."""
    toward, away = e.top(n)

    def show(pieces: list[Piece]) -> str:
        return ", ".join(f"{p.text.strip() or repr(p.text)} {p.attribution:+.3f}" for p in pieces) or "none"

    return (
        f"{e.text}\n  {e.target} {e.score:.3f} (reference {e.reference_score:.3f}, delta {e.delta:+.3f})\n"
        f"  toward {e.target}: {show(toward)}\n  away from it: {show(away)}"
    )


def _colour(value: float, scale: float) -> str:
    alpha = min(1.0, abs(value) / scale) * 0.8 if scale > 0 else 0.0
    rgb = "22,163,74" if value > 0 else "220,38,38"
    return f"rgba({rgb},{alpha:.2f})"


def as_html(e: Explanation, anchor: str | None = None, note: str = "") -> str:
    """One explanation as a block of coloured text: green pushed toward the target, red away from it."""
    scale = max((abs(p.attribution) for p in e.pieces), default=0.0)
    parts, at = [], 0
    for p in e.pieces:
        parts.append(html.escape(e.text[at : p.start]))
        title = f"{p.attribution:+.4f}"
        parts.append(f"<span style='background:{_colour(p.attribution, scale)}' title='{title}'>")
        parts.append(f"{html.escape(p.text)}</span>")
        at = p.end
    parts.append(html.escape(e.text[at:]))
    head = f"<b>{html.escape(e.target)}</b> {e.score:.3f} · reference {e.reference_score:.3f} · delta {e.delta:+.3f}"
    id_ = f" id='{html.escape(anchor)}'" if anchor else ""
    return f"<section{id_}><p class='meta'>{head}{html.escape(note)}</p><p class='text'>{''.join(parts)}</p></section>"


PAGE_CSS = (
    "body{font:15px/1.6 system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#1f2328}"
    "section{border-top:1px solid #d0d7de;padding:.5em 0}.meta{color:#57606a;margin:0}"
    ".text{white-space:pre-wrap;margin:.3em 0}span{border-radius:3px}"
)


def page(title: str, blocks: list[str], intro: str = "") -> str:
    """A whole page of explanations, with nothing fetched from outside."""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{PAGE_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p class='meta'>{html.escape(intro)} Green pushed toward the label, red away from it; hover a piece for "
        "its share. Integrated gradients on the token embeddings (captum).</p>" + "".join(blocks) + "</body></html>\n"
    )
