"""`tunesmith export`: a finished run as a plain transformers model folder.

The export is built beside its destination and swapped in when complete; an existing destination is
replaced only with --overwrite and only when tunesmith made it, and never when it is, or holds, the run.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.inference import load_generative_run
from tunesmith.models.loading import PEFT_METHODS
from tunesmith.outputs import staged_output
from tunesmith.run_folder import run_config
from tunesmith.tasks import task_info

log = logging.getLogger("tunesmith")


def export_run(
    run_dir: str | Path,
    output: str | Path,
    merge: bool,
    overwrite: bool = False,
    device: str = "auto",
    trust_remote_code: bool = False,
) -> Path:
    """Save a plain transformers model: the adapter folded into the base weights (--merge), or as it is.

    Every check runs before the model loads, so a refused export costs no time."""
    out = Path(output)
    cfg = run_config(run_dir)
    if not task_info(cfg.task).generative:
        raise TunesmithError(
            f"export covers sft and seq2seq runs for now; {run_dir}/model of a {cfg.task} run loads with "
            "AutoModelForSequenceClassification.from_pretrained (full) or PeftModel.from_pretrained (LoRA)"
        )
    m = cfg.method.method
    peft = m in PEFT_METHODS
    if peft and merge and m in ("prompt_tuning", "prefix_tuning"):
        raise TunesmithError(
            f"--method {m} adds virtual tokens, which cannot fold into the weights; export without --merge"
        )
    if peft and merge and m == "qlora":
        raise TunesmithError("a qlora adapter sits on 4-bit weights; merge it on a GPU into a bf16 copy of the base")
    if not peft and merge:
        log.info("this run trained every weight: nothing to merge, exporting the model as it is")
    with staged_output(out, "export", overwrite, inputs=[run_dir]) as work:
        run = load_generative_run(run_dir, device, trust_remote_code)
        model = run.lm.model.merge_and_unload() if peft and merge else run.lm.model
        model.save_pretrained(work, safe_serialization=True)
        run.lm.tokenizer.save_pretrained(work)
    return out
