"""Request bodies, as pydantic checks them before a route runs: types, ranges, and the OpenAI fields a
tunesmith run cannot honour (refused by name, never silently ignored). Limits set per server (text length,
batch size, max_tokens) are checked in the routes, which know the `ServeConfig`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # our own route: a misspelt field is an error, not a default

    model: str | None = Field(None, description="the served run's name; optional when one classifier is served")
    input: str | list[str] = Field(description="one text, or a list of texts")


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    # "developer" is what OpenAI's newer clients send in place of "system"
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


# OpenAI fields a run cannot honour, and the value that means "not asked for": anything else is refused.
_UNSUPPORTED: dict[str, Any] = {
    "n": 1,
    "best_of": 1,
    "tools": None,
    "tool_choice": None,
    "functions": None,
    "function_call": None,
    "logprobs": None,
    "top_logprobs": None,
    "logit_bias": None,
    "echo": False,
    "suffix": None,
    "presence_penalty": 0,
    "frequency_penalty": 0,
}
_WHY = {
    "n": "one answer per request is generated; send several requests",
    "best_of": "one answer per request is generated",
    "tools": "tunesmith runs do not call tools",
    "tool_choice": "tunesmith runs do not call tools",
    "functions": "tunesmith runs do not call functions",
    "function_call": "tunesmith runs do not call functions",
    "logprobs": "log-probabilities are not returned",
    "top_logprobs": "log-probabilities are not returned",
    "logit_bias": "logit bias is not supported",
    "echo": "the prompt is not echoed",
    "suffix": "insertion is not supported",
    "presence_penalty": "penalties are not supported; leave it at 0",
    "frequency_penalty": "penalties are not supported; leave it at 0",
}


class _Generation(BaseModel):
    model_config = ConfigDict(extra="allow")  # clients send fields of their own (user, metadata, ...)

    model: str
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)  # what torch.manual_seed takes

    @model_validator(mode="after")
    def _refuse_unsupported(self) -> _Generation:
        for name, default in _UNSUPPORTED.items():
            value = (self.model_extra or {}).get(name)
            if value and value != default:  # None, 0, false, [] and the default all mean "not asked for"
                raise ValueError(f"{name}: {_WHY[name]}")
        fmt = (self.model_extra or {}).get("response_format")
        if fmt not in (None, {"type": "text"}):
            raise ValueError("response_format: only plain text answers are supported")
        stops = self.stops()
        if len(stops) > 4 or any(not s or len(s) > 200 for s in stops):
            raise ValueError("stop: at most 4 strings, each 1 to 200 characters")
        return self

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def wants_usage_chunk(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


class ChatRequest(_Generation):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    def answer_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Generation):
    prompt: str | list[str]

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else self.prompt

    def answer_tokens(self) -> int | None:
        return self.max_tokens
