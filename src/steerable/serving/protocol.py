"""The request bodies `steerable serve` accepts, as pydantic models (FastAPI's own way, and vLLM's
OpenAI server's), so that every field is typed and a new field cannot skip validation.

One rule for every field:
    JSON numbers only   no strings or booleans for numbers (strict mode), and finite ones: the
                        NaN and Infinity literals Python's json reads are refused
    null = default      a field given as null is a field left out
    out of range        refused, naming the field

Text must be valid Unicode (a lone surrogate, which JSON's \\ud800 escapes can spell, is refused).
At the top level, fields we do not use are accepted and ignored, as vLLM's server does (OpenAI
clients send e.g. `frequency_penalty`, `user`), and so are the extra fields of a message, a
content part, `stream_options` and an NP-DPO example, so long as they hold JSON that can be
written again (finite numbers, valid Unicode: proxy mode passes them on to its upstream);
`steering`, ours alone, refuses a field it does not know.
`validation_error` turns pydantic's first error into a one-line message and the field's path,
e.g. `steering.weights.brief` or `messages[0].content`; `ApiError` is a refusal as OpenAI's error
body, {"error": {"message", "type", "param", "code"}}, whoever answers it (the app or uvicorn's
protocol in local.py).
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

MAX_STOP = 4
MAX_SCORED = 64
MAX_IMAGES = 10  # per images request, as OpenAI's images API


class ApiError(Exception):
    """An error the client caused (or a full queue), as OpenAI's error body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    @property
    def type(self) -> str:
        if self.status == 401:
            return "authentication_error"
        if self.status >= 500:
            return "server_error"
        return "invalid_request_error"

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _unicode(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError("unicode", "must be valid Unicode text (it holds a lone surrogate)")
    return text


def _plain_json(value: object) -> object:
    """A field we ignore, as JSON that can be written again (proxy mode passes it on)."""
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError, RecursionError):  # NaN or Infinity; a lone surrogate
        raise PydanticCustomError("plain_json", "must be JSON with finite numbers and valid Unicode text")
    return value


Text = Annotated[str, AfterValidator(_unicode)]
Ignored = Annotated[object, AfterValidator(_plain_json)]
Stop = Annotated[Text, Field(min_length=1)]


def one_or_many(kind: str, what: str):
    """A field that is one `kind` or a list of them (e.g. `stop`), told apart by the JSON type so
    that an error names the form that was sent."""

    def form(value) -> str | None:
        return "many" if isinstance(value, list) else "one" if isinstance(value, kind) else None

    return Discriminator(form, custom_error_type="type", custom_error_message=f"must be {what}")


class Body(BaseModel):
    """A JSON object with strict types, finite numbers, and null meaning "left out"; a field it
    does not know is kept (and ignored) if it is JSON that can be written again."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="allow")
    __pydantic_extra__: dict[str, Ignored]

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data):
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


class TextPart(Body):
    type: Literal["text"]
    text: Text


class Message(Body):
    role: Literal["system", "user", "assistant"]
    content: Annotated[
        Annotated[Text, Tag("one")] | Annotated[list[TextPart], Tag("many")],
        one_or_many(str, "a string or a list of text parts"),
    ]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class Example(Body):
    """NP-DPO: one of a user's choices (checked further by the policy's own examples check, which
    also reads rows that carry more fields than these three)."""

    prompt: Text
    chosen: Text
    rejected: Text


class Steering(Body):
    """The `steering` field: which keys a model takes is the model's to check."""

    model_config = ConfigDict(extra="forbid")

    weights: Annotated[
        Annotated[dict[Text, float], Tag("one")] | Annotated[list[float], Tag("many")],
        one_or_many(dict, "an object {name: weight} or a list of weights"),
    ] = None
    mapping: Text | None = None
    targets: dict[Text, float] | None = None
    levels: dict[Text, float] | None = None
    examples: list[Example] | None = None
    divergence: float | None = None  # MOD's alpha; its range is the method's to check


class StreamOptions(Body):
    include_usage: bool = False


class ChatCompletionRequest(Body):
    """POST /v1/chat/completions. `max_completion_tokens` (OpenAI's newer name) wins over
    `max_tokens`; the server's own limit is checked by the handler."""

    model: Text
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    n: int = Field(1, ge=1, le=8)
    stop: Annotated[
        Annotated[Stop, Tag("one")] | Annotated[list[Stop], Tag("many"), Field(max_length=MAX_STOP)],
        one_or_many(str, f"a non-empty string or a list of up to {MAX_STOP}"),
    ] = None
    stream: bool = False
    stream_options: StreamOptions = Field(default_factory=StreamOptions)
    steering: Steering = Field(default_factory=Steering)


class ImageGenerationRequest(Body):
    """POST /v1/images/generations, OpenAI's images API: `n` images of `prompt`, as base64 PNGs,
    with our `steering` and two extensions, `guidance_scale` (classifier-free guidance, >= 0) and
    `num_inference_steps` (unset: the model's own). `size` (the model's own only),
    `response_format` (b64_json only) and the step count's bound are the model's to check."""

    model: Text
    prompt: Text = Field(min_length=1)
    n: int = Field(1, ge=1, le=MAX_IMAGES)
    size: Text | None = None
    response_format: Text = "b64_json"
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    guidance_scale: float | None = Field(None, ge=0)
    num_inference_steps: int | None = Field(None, ge=1)
    steering: Steering = Field(default_factory=Steering)


class ScoreRequest(Body):
    """POST /v1/score: the objectives' scores of `responses` to `prompt`."""

    model: Text
    prompt: Text
    responses: list[Text] = Field(min_length=1, max_length=MAX_SCORED)


# the fields typed by `one_or_many`: an error's location holds the form's tag right after their name
TAGGED = frozenset(
    name
    for model in (Message, Steering, ChatCompletionRequest)
    for name, info in model.model_fields.items()
    if any(isinstance(m, Discriminator) for m in info.metadata)
)


def field_path(loc: tuple) -> str | None:
    """pydantic's error location as the field's path, `steering.weights.brief`, `stop[0]` (the tags
    of `one_or_many` left out, a key named like one kept; text a JSON reply cannot carry escaped)."""
    path = ""
    for i, part in enumerate(loc):
        if part in ("one", "many") and i and loc[i - 1] in TAGGED:
            continue
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path.encode("utf-8", "backslashreplace").decode() or None


# what a field must be, by pydantic's error type (its messages' wording is pydantic's to change);
# a type not here, as our own (`unicode`, `plain_json`, `one_or_many`'s), reads as its message
MUST = {
    "bool_type": "must be true or false",
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be a JSON object",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "finite_number": "must be a finite number",
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "literal_error": "must be {expected}",
    "too_short": "must have at least {min_length} {unit}",
    "string_too_short": "must have at least {min_length} {unit}",
    "too_long": "must have at most {max_length} {unit}, not {actual_length}",
}
UNSHOWN = ("unicode", "plain_json", "too_short", "string_too_short", "too_long")  # no ", got ..."


def validation_error(err: ValidationError) -> tuple[str, str | None]:
    """(a one-line message, the field's path) for pydantic's first error."""
    first = err.errors(include_url=False)[0]
    loc, kind, value = first["loc"], first["type"], first.get("input")
    key = loc[-1:] == ("[key]",)  # a dict's key, e.g. a weight's name: the dict is the field
    param = field_path(loc[:-2] if key else loc)
    name = ("a key of " if key else "") + (param or "the request body")
    if kind == "missing":
        return f"{name} is required", param
    if kind == "extra_forbidden":
        return f"{name} is not a field of {field_path(loc[:-1]) or 'the request body'}", param
    if kind == "float_type" and isinstance(value, int) and not isinstance(value, bool):
        return f"{name} is a number too large for a float", param
    context = {
        k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in first.get("ctx", {}).items()
    }
    unit = "character(s)" if isinstance(value, str) else "item(s)"
    text = MUST[kind].format(**context, unit=unit) if kind in MUST else first["msg"]
    if isinstance(value, str | int | float) and kind not in UNSHOWN:
        shown = repr(value)
        text += f", got {shown if len(shown) <= 40 else shown[:37] + '...'}"
    return f"{name} {text}", param
