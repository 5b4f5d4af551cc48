"""`tunesmith serve`'s settings: where it listens, who may call it, how requests are batched and bounded.

One dataclass is both the command's flags (`cli.py` builds one flag per field) and the Python API
(`tunesmith.serve.serve(runs, ServeConfig(port=9000))`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tunesmith.errors import TunesmithError
from tunesmith.evaluate.config import MAX_NEW_TOKENS
from tunesmith.fields import check_range, option

API_KEY_ENV = "TUNESMITH_API_KEY"


@dataclass
class ServeConfig:
    host: str = option("127.0.0.1", "address to listen on (0.0.0.0: every interface; then set an API key)")
    port: int = option(8000, "port to listen on (0: any free port, printed at start)")
    api_key: str | None = option(
        None,
        f"require `Authorization: Bearer KEY` on /v1 routes; prefer the {API_KEY_ENV} environment variable, "
        "which other users of the machine cannot read from the process list",
    )
    device: str = option("auto", "cpu, cuda, cuda:N or auto")
    trust_remote_code: bool = option(
        False, "run code shipped with a run's model (only for models you trust; a run folder never turns this on)"
    )
    max_batch_size: int = option(64, "classifiers: most texts gathered from waiting requests into one model call")
    forward_batch_size: int | None = option(
        None,
        "classifiers: most texts per forward pass within a call; passes are sorted by length and, on a CPU, "
        "never pad a text to more than twice its length (auto: 8 on a CPU, the whole call on a GPU)",
    )
    max_wait_ms: float = option(
        2.0, "classifiers: how long the first text of a batch waits for others to join it (milliseconds)"
    )
    max_queue: int = option(
        1024, "texts (classifiers) or requests (generation) waiting per model; beyond it requests get 503"
    )
    max_body_bytes: int = option(2_000_000, "largest request body; larger ones get 413")
    max_texts: int = option(256, "most texts in one /v1/classify request, or prompts in one /v1/completions request")
    max_text_chars: int = option(20_000, "longest text, message or prompt, in characters")
    max_messages: int = option(256, "most messages in one chat request")
    max_tokens: int = option(1024, f"largest max_tokens a request may ask for (at most {MAX_NEW_TOKENS})")
    access_log: bool = option(False, "log every request (uvicorn's access log)")
    shutdown_timeout: float = option(
        30.0, "seconds requests in flight get to finish after SIGTERM or Ctrl-C before the server stops"
    )

    def validate(self) -> ServeConfig:
        check_range("port", self.port, at_least=0, at_most=65535)
        check_range("max-batch-size", self.max_batch_size, at_least=1, at_most=4096)
        check_range("forward-batch-size", self.forward_batch_size, at_least=1, at_most=4096)
        check_range("max-wait-ms", self.max_wait_ms, at_least=0, at_most=1000)
        check_range("max-queue", self.max_queue, at_least=1)
        check_range("max-body-bytes", self.max_body_bytes, at_least=1024)
        check_range("max-texts", self.max_texts, at_least=1)
        check_range("max-text-chars", self.max_text_chars, at_least=1)
        check_range("max-messages", self.max_messages, at_least=1)
        check_range("max-tokens", self.max_tokens, at_least=1, at_most=MAX_NEW_TOKENS)
        check_range("shutdown-timeout", self.shutdown_timeout, at_least=0)
        if self.max_texts > self.max_queue:
            raise TunesmithError(
                f"--max-texts {self.max_texts} is more than --max-queue {self.max_queue}: a request that large "
                "could never be queued; raise --max-queue or lower --max-texts"
            )
        if self.api_key is not None and not self.api_key.strip():
            raise TunesmithError(f"--api-key is empty; give a key, or leave it and {API_KEY_ENV} unset")
        return self

    def key(self) -> str | None:
        """The key requests must carry: the flag's, else the environment's, else none."""
        return self.api_key or os.environ.get(API_KEY_ENV) or None
