"""Should full fine-tuning freeze the token embeddings by default? Measures speed and memory.

Runs the same steps of full fine-tuning on multilingual-e5-small (embeddings are ~81% of its
weights) with the word-embedding table trainable and frozen, and prints examples/s and peak RSS
with the ratio. Usage: python bench/freeze_embeddings.py [--steps 20] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

CHILD = r"""
import sys, time, torch, resource
from tunesmith.config import RunConfig
from tunesmith.demo import reviews_table
from tunesmith.models.loading import apply_method, load_classifier, load_tokenizer
from tunesmith.models.registry import resolve_model
from tunesmith.tasks.base import Collator, encode_texts, make_examples
from tunesmith.tasks.classification import Classification
from tunesmith.train.loop import build_optimizer

freeze, steps, batch = sys.argv[1] == "1", int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
path = resolve_model("multilingual-e5-small")
tok = load_tokenizer(path)
df = reviews_table(per_class=steps * batch)
task = Classification(); task.fit(df, "bench")
model = load_classifier(path, task.model_kwargs(), RunConfig().model, tok.pad_token_id)
model = apply_method(model, RunConfig().method, freeze_embeddings=freeze)
ex = make_examples(encode_texts(tok, df["text"].tolist(), 96), task.targets(df))
opt = build_optimizer(model, RunConfig().train)
coll = Collator(tok.pad_token_id)
model.train()
start = None
for i in range(steps + 2):
    if i == 2:
        start = time.perf_counter()  # two warm-up steps
    b = coll(ex[i * batch:(i + 1) * batch])
    loss, n = task.loss(model, b)
    (loss / n).backward(); opt.step(); opt.zero_grad(set_to_none=True)
elapsed = time.perf_counter() - start
print(steps * batch / elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def measure(freeze: bool, steps: int, batch: int) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, "1" if freeze else "0", str(steps), str(batch)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[-2]), float(out[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    start = time.perf_counter()
    trainable = measure(False, args.steps, args.batch_size)
    frozen = measure(True, args.steps, args.batch_size)
    print(f"multilingual-e5-small, full fine-tuning, {args.steps} steps x batch {args.batch_size}, max length 96")
    print(f"{'embeddings':<12} {'examples/s':>11} {'peak RSS MiB':>13}")
    print(f"{'trainable':<12} {trainable[0]:>11.1f} {trainable[1]:>13.0f}")
    print(f"{'frozen':<12} {frozen[0]:>11.1f} {frozen[1]:>13.0f}")
    print(f"{'ratio':<12} {frozen[0] / trainable[0]:>10.2f}x {frozen[1] / trainable[1]:>12.2f}x")
    print(f"(bench wall time {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
