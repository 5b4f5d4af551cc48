"""The page's "try it" box: a finished run, loaded on first use, labels a text or answers a chat turn.

At most `_KEEP` runs stay loaded (the one used longest ago goes first), and each answers one request at a
time: a page on a laptop must not hold every model it has ever shown in memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from tunesmith.inference import ClassifierRun, GenerativeRun, Sampling, answer, open_run, predict_texts

_KEEP = 2
_SAMPLING = Sampling(max_new_tokens=128)  # greedy: the same question gets the same answer


class LoadedRuns:
    def __init__(self, keep: int = _KEEP) -> None:
        self.keep = keep
        self._runs: OrderedDict[Path, tuple[ClassifierRun | GenerativeRun, threading.Lock]] = OrderedDict()
        self._lock = threading.Lock()

    def reply(self, folder: Path, text: str, history: list[dict[str, str]]) -> dict[str, Any]:
        """A classifier's prediction for `text`, or a generative run's answer to it after `history`."""
        run, busy = self._get(folder)
        with busy:
            if isinstance(run, ClassifierRun):
                return {"kind": "classify", "prediction": predict_texts(run, [text])[0]}
            conversation = [*run.opening(), *history, run.user_turn(text)]
            return {"kind": "chat", "answer": answer(run, conversation, _SAMPLING)}

    def _get(self, folder: Path) -> tuple[ClassifierRun | GenerativeRun, threading.Lock]:
        with self._lock:
            if folder in self._runs:
                self._runs.move_to_end(folder)
                return self._runs[folder]
            while len(self._runs) >= self.keep:
                self._runs.popitem(last=False)
            loaded = (open_run(folder, "auto"), threading.Lock())
            self._runs[folder] = loaded
            return loaded
