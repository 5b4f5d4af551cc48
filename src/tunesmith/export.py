"""`tunesmith export`: a finished run as a plain transformers model folder.

The export is built beside its destination and swapped in when complete; an existing destination is
replaced only with --overwrite and only when tunesmith made it, and never when it is, or holds, the run.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.inference import GenerativeRun
from tunesmith.outputs import staged_output

log = logging.getLogger("tunesmith")


def export_run(
    run: GenerativeRun, run_dir: str | Path, output: str | Path, merge: bool, overwrite: bool = False
) -> Path:
    """Save a plain transformers model: the adapter folded into the base weights (--merge), or as it is."""
    out = Path(output)
    model = run.lm.model
    if run.is_peft and merge:
        m = run.cfg.method.method
        if m in ("prompt_tuning", "prefix_tuning"):
            raise TunesmithError(
                f"--method {m} adds virtual tokens, which cannot fold into the weights; export without --merge"
            )
        if m == "qlora":
            raise TunesmithError(
                "a qlora adapter sits on 4-bit weights; merge it on a GPU into a bf16 copy of the base"
            )
    elif not run.is_peft and merge:
        log.info("this run trained every weight: nothing to merge, exporting the model as it is")
    with staged_output(out, "export", overwrite, inputs=[run_dir]) as work:
        if run.is_peft and merge:
            model = model.merge_and_unload()
        model.save_pretrained(work, safe_serialization=True)
        run.lm.tokenizer.save_pretrained(work)
    return out
