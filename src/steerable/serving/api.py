"""`steerable serve`: an OpenAI-compatible chat completions API with one `steering` field for every
method (DESIGN.md §7), on FastAPI.

    POST /v1/chat/completions   messages, max_tokens, temperature, top_p, seed, n, stop, stream
                                (SSE, ending `data: [DONE]`), and `steering` (the openai client
                                sends it through `extra_body`):
                                  weights   a preference (by name or position)   RiC, MOSLIM
                                  mapping   linf | l2 | linear                    RiC, MOSLIM
                                  targets   normalised targets per objective      RiC
                                  levels    levels 1..L for any objectives        MOSLIM
                                  examples  [{prompt, chosen, rejected}, ...]     NP-DPO
                                The response echoes what was applied, `steering`.
    GET  /v1/models             each model's method, objectives, levels and accepted steering
    GET  /health

Steering is checked by the library's own code (`Preference`, the tag checks, the examples
check), so the server and the Python API refuse the same things. Errors use OpenAI's body,
{"error": {"message", "type", "param", "code"}}: 400 for bad values and steering, 401 for a
missing or wrong API key, 404 for an unknown model, 413 for a body over the limit, 422 for
malformed JSON, 503 (with Retry-After) when the queue is full.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError

from steerable.errors import SteerableError
from steerable.serving.engine import BatchEngine, Job
from steerable.serving.protocol import ChatCompletionRequest, ScoreRequest, validation_error

STEERING_KEYS = {
    "ric": ("weights", "mapping", "targets"),
    "moslim": ("weights", "mapping", "levels"),
    "np-dpo": ("examples",),
    "base": (),
}
log = logging.getLogger(__name__)
PLAYGROUND = (files("steerable.serving") / "playground.html").read_text()


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


@dataclass
class ServedModel:
    """A model the server answers for: a steerable model directory (its SteerablePolicy) or a
    base model by id or alias (no steering: the prompting floor's model, as it is)."""

    id: str
    method: str
    model: object
    tokenizer: object
    policy: object | None = None
    engine: BatchEngine | None = field(default=None, repr=False)
    upstream: str | None = None  # proxy mode: the OpenAI-compatible engine that generates
    upstream_model: str | None = None

    @classmethod
    def proxy(cls, spec: str, upstream: str, upstream_model: str | None = None) -> ServedModel:
        """A RiC or MOSLIM directory served in front of `upstream` (an OpenAI-compatible base URL
        ending in /v1) that serves its merged model (`steerable export`): the steering is
        rendered into the messages here and the request forwarded; no weights are loaded."""
        from steerable.defaults import load_tokenizer
        from steerable.policy import TAGGED_METHODS, SteerablePolicy, load_manifest

        manifest = load_manifest(spec)
        if manifest.method not in TAGGED_METHODS:
            raise SteerableError(
                f"{spec} holds a {manifest.method!r} model; proxy mode serves models steered through "
                f"the prompt ({', '.join(TAGGED_METHODS)}): serve it without --upstream"
            )
        policy = SteerablePolicy(None, load_tokenizer(str(spec)), manifest)
        name = Path(spec).resolve().name
        return cls(
            name, manifest.method, None, policy.tokenizer, policy, None, upstream.rstrip("/"), upstream_model
        )

    @classmethod
    def load(cls, spec: str, max_batch: int = 32, max_queue: int = 256, trust_remote_code: bool = False):
        from steerable.policy import MANIFEST, SteerablePolicy

        path = Path(spec)
        if (path / MANIFEST).is_file():
            policy = SteerablePolicy.from_pretrained(path, trust_remote_code=trust_remote_code)
            served = cls(path.resolve().name, policy.manifest.method, policy.model, policy.tokenizer, policy)
        else:
            from steerable.defaults import load_causal_lm

            model, tokenizer = load_causal_lm(spec, trust_remote_code=trust_remote_code)
            served = cls(spec if not path.exists() else path.resolve().name, "base", model, tokenizer)
        film = served.policy.fewshot.film if served.method == "np-dpo" else None
        served.engine = BatchEngine(served.model, served.tokenizer, film, max_batch, max_queue)
        if served.engine.prefixes is not None:  # the prompt prefix every request shares, cached once
            served.engine.prefixes.learn(
                [served.render(served.steer([{"role": "user", "content": q}], None)[0]) for q in ("a", "b")]
            )
        return served

    def card(self) -> dict:
        """The /v1/models entry: what this model is and the steering it takes."""
        card = {
            "id": self.id,
            "object": "model",
            "created": 0,
            "owned_by": "steerable",
            "method": self.method,
        }
        if self.policy is not None:
            card["objectives"] = self.policy.names
            card["levels"] = self.policy.levels
            card["default_mapping"] = self.policy.mapping.default
        card["steering"] = list(STEERING_KEYS[self.method])
        return card

    @property
    def context_length(self) -> int | None:
        if self.model is None:  # proxy mode: the upstream checks its own context
            return None
        config = self.model.config.get_text_config()
        return getattr(config, "max_position_embeddings", None)

    def steer(self, messages: list[dict], steering: Mapping | None) -> tuple[list[dict], dict, object]:
        """(the conversation with its steering's tags, the steering applied, NP-DPO's z or None)
        for a checked request."""
        steering = dict(steering or {})
        allowed = STEERING_KEYS[self.method]
        unknown = [k for k in steering if k not in allowed]
        if unknown:
            takes = f"it takes {list(allowed)}" if allowed else "it takes no steering"
            raise ApiError(400, f"steering {unknown} does not apply to {self.id} ({self.method}); {takes}",
                           f"steering.{unknown[0]}", "invalid_steering")  # fmt: skip
        if self.method == "base":
            return messages, {}, None
        if self.method == "np-dpo":
            examples = steering.get("examples", [])
            z = with_param("steering.examples", lambda: self.policy.latent_for(examples))
            return self.policy.steered_messages(messages, None), {"examples": len(examples)}, z
        weights, mapping = steering.get("weights"), steering.get("mapping")  # typed by ChatCompletionRequest
        given = [k for k in ("weights", "targets", "levels") if steering.get(k) is not None]
        param = f"steering.{given[0]}" if given else "steering"
        applied = with_param(
            param,
            lambda: self.policy.steering_for(
                preference=weights,
                targets=steering.get("targets"),
                levels=steering.get("levels"),
                mapping=mapping,
            ),
        )
        steered = with_param("messages", lambda: self.policy.steered_messages(messages, applied))
        key = "levels" if self.method == "moslim" else "targets"
        echo = {key: applied}
        if weights is not None:
            echo["weights"] = dict(zip(self.policy.names, self.policy_weights(weights), strict=True))
            echo["mapping"] = mapping or self.policy.mapping.default
        return steered, echo, None

    def render(self, messages: list[dict]) -> str:
        from steerable.generation import render_chat

        return with_param("messages", lambda: render_chat(self.tokenizer, messages))

    def policy_weights(self, weights) -> tuple[float, ...]:
        from steerable.preferences import Preference

        return Preference.parse(weights, self.policy.names).weights


def with_param(param: str, fn):
    """`fn()`, its SteerableError (and the warning-free checks behind it) as a 400 on `param`."""
    try:
        return fn()
    except SteerableError as err:
        raise ApiError(400, str(err), param, "invalid_steering" if param.startswith("steering") else None)


# --- the request ----------------------------------------------------------------------------
@dataclass
class ChatRequest:
    model: ServedModel
    messages: list[dict]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    n: int
    stop: list[str]
    stream: bool
    steering: dict | None
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the usage


def validated(schema: type[BaseModel], body: object) -> BaseModel:
    """`body` as `schema`, or a 400 naming the first field it gets wrong."""
    try:
        return schema.model_validate(body)
    except ValidationError as err:
        message, param = validation_error(err)
        code = "invalid_steering" if (param or "").startswith("steering") else None
        raise ApiError(400, message, param, code)


def served_model(name: str, models: dict[str, ServedModel]) -> ServedModel:
    if name not in models:
        raise ApiError(
            404, f"model {name!r} is not served here; served: {list(models)}", "model", "model_not_found"
        )
    return models[name]


def parse_request(body: object, models: dict[str, ServedModel], max_tokens_limit: int) -> ChatRequest:
    """A /v1/chat/completions body checked against `ChatCompletionRequest` (400 naming the field)."""
    request = validated(ChatCompletionRequest, body)
    model = served_model(request.model, models)
    if request.model_extra:
        log.warning("fields present in the request but ignored: %s", sorted(request.model_extra))
    messages = [{"role": m.role, "content": m.text()} for m in request.messages]
    if not any(m["role"] == "user" and m["content"].strip() for m in messages):
        raise ApiError(400, "messages need a user message with text", "messages")
    given = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
    max_tokens = getattr(request, given) or 64
    if max_tokens > max_tokens_limit:
        raise ApiError(400, f"{given} must be in [1, {max_tokens_limit}], got {max_tokens}", given)
    return ChatRequest(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        seed=request.seed,
        n=request.n,
        stop=[request.stop] if isinstance(request.stop, str) else request.stop or [],
        stream=request.stream,
        steering=request.steering.model_dump(exclude_none=True),
        include_usage=request.stream_options.include_usage,
    )


def parse_score(body: object, models: dict[str, ServedModel]) -> tuple[ServedModel, str, list[str]]:
    """A /v1/score body checked against `ScoreRequest`: (the model, the prompt, the responses)."""
    request = validated(ScoreRequest, body)
    model = served_model(request.model, models)
    if model.policy is None:
        raise ApiError(400, f"{model.id} is a base model: it has no objectives to score with", "model")
    return model, request.prompt, request.responses


def make_jobs(request: ChatRequest, text: str, z) -> list[Job]:
    """The request's n jobs: its own seed for the first, seed + i for the i-th."""
    model = request.model
    prompt_tokens = len(model.tokenizer(text, add_special_tokens=False).input_ids)
    limit = model.context_length
    if limit is not None and prompt_tokens + request.max_tokens > limit:
        raise ApiError(
            400,
            f"the prompt ({prompt_tokens} tokens) plus max_tokens ({request.max_tokens}) exceeds the model's "
            f"context of {limit} tokens; shorten the conversation or lower max_tokens",
            "messages",
            "context_length_exceeded",
        )
    return [
        Job(
            text=text,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=None if request.seed is None else request.seed + i,
            stop=request.stop,
            latent=z,
        )
        for i in range(request.n)
    ]


# --- the app --------------------------------------------------------------------------------
def create_app(
    models: list[ServedModel],
    api_key: str | None = None,
    max_body_bytes: int = 1 << 20,
    max_tokens_limit: int = 1024,
):
    served = {m.id: m for m in models}
    app = FastAPI(title="steerable", docs_url=None, redoc_url=None)

    def error_response(err: ApiError):
        headers = {"Retry-After": "1"} if err.status == 503 else None
        return JSONResponse(err.body(), status_code=err.status, headers=headers)

    @app.exception_handler(ApiError)
    async def api_error(_, err: ApiError):
        return error_response(err)

    @app.exception_handler(Exception)
    async def unexpected(_, err: Exception):  # never a traceback page; the server stays up
        return error_response(ApiError(500, f"internal error: {type(err).__name__}: {err}"))

    @app.middleware("http")
    async def authorise(request: Request, call_next):
        guarded = api_key is not None and request.url.path.startswith("/v1/")
        if guarded and request.headers.get("authorization") != f"Bearer {api_key}":
            return error_response(ApiError(401, "missing or wrong API key (Authorization: Bearer KEY)"))
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse)
    async def playground():
        return HTMLResponse(PLAYGROUND)

    @app.post("/v1/score")
    async def score(request: Request):
        """The objectives' scores of responses to a prompt (what the playground shows)."""
        model, prompt, responses = parse_score(parse_json(await read_body(request, max_body_bytes)), served)
        rewards = model.policy.rewards
        raw = await asyncio.to_thread(rewards.score, [prompt] * len(responses), responses)
        return {
            "objectives": rewards.names,
            "raw": raw.tolist(),
            "normalised": rewards.normalise(raw).tolist(),
        }

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": list(served)}

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [m.card() for m in served.values()]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = parse_json(await read_body(request, max_body_bytes))
        parsed = parse_request(body, served, max_tokens_limit)
        # off the event loop: NP-DPO's examples go through the pair encoder
        steered, applied, z = await asyncio.to_thread(parsed.model.steer, parsed.messages, parsed.steering)
        if parsed.model.upstream is not None:
            return await forward(parsed.model, body, steered, applied)
        jobs = await asyncio.to_thread(make_jobs, parsed, parsed.model.render(steered), z)
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": ident, "created": created, "model": parsed.model.id}
        if parsed.stream:
            return StreamingResponse(
                stream_chunks(parsed.model, jobs, head, applied, request), media_type="text/event-stream"
            )
        loop = asyncio.get_running_loop()
        finished = [asyncio.Event() for _ in jobs]
        for job, event in zip(jobs, finished, strict=True):
            job.on_done = lambda event=event: loop.call_soon_threadsafe(event.set)
        submit(parsed.model, jobs)
        try:
            for event in finished:
                await event.wait()
        except asyncio.CancelledError:
            for job in jobs:
                job.cancelled.set()
            raise
        failed = next((j.error for j in jobs if j.error is not None), None)
        if failed is not None:
            raise ApiError(500, f"generation failed: {failed}")
        return {
            **head,
            "object": "chat.completion",
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": j.output},
                    "finish_reason": j.finish_reason,
                }
                for i, j in enumerate(jobs)
            ],
            "usage": usage(jobs),
            "steering": applied,
        }

    return app


async def forward(model: ServedModel, body: dict, steered: list[dict], applied: dict):
    """Proxy mode: the request with its steering rendered into the messages, to the upstream
    engine; its answer comes back with the applied steering (streamed: in the first chunk)."""
    import httpx

    payload = {k: v for k, v in body.items() if k != "steering"}
    payload.update(messages=steered, model=model.upstream_model or payload["model"])
    url = model.upstream + "/chat/completions"
    client = httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=10.0))
    try:
        request = client.build_request("POST", url, json=payload)
        response = await client.send(request, stream=bool(body.get("stream")))
    except httpx.HTTPError as err:
        await client.aclose()
        raise ApiError(502, f"the upstream {model.upstream} did not answer ({err})", code="upstream_error")
    if response.status_code != 200:
        text = (await response.aread()).decode(errors="replace")[:500]
        await client.aclose()
        raise ApiError(502, f"the upstream answered {response.status_code}: {text}", code="upstream_error")
    if not body.get("stream"):
        data = json.loads(await response.aread())
        await client.aclose()
        return {**data, "model": model.id, "steering": applied}

    async def relay():
        first = True
        try:
            async for line in response.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    chunk = json.loads(line[len("data: ") :])
                    chunk["model"] = model.id
                    if first:
                        chunk["steering"], first = applied, False
                    line = "data: " + json.dumps(chunk)
                if line:
                    yield line + "\n\n"
        finally:
            await response.aclose()
            await client.aclose()

    return StreamingResponse(relay(), media_type="text/event-stream")


def parse_json(raw: bytes):
    """The request body's JSON; 422 for text that is not JSON or that Python cannot hold (nested
    past the recursion limit, an integer over the int-from-text digit limit)."""
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError(422, f"the request body is not valid JSON ({err})")
    except RecursionError:
        raise ApiError(422, "the request body is nested too deeply to read")
    except ValueError:  # int("7" * 5000): over sys.get_int_max_str_digits()
        raise ApiError(422, "the request body holds a number with too many digits to read")


async def read_body(request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body is over the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the request body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def submit(model: ServedModel, jobs: list[Job]) -> None:
    try:
        model.engine.submit(jobs)
    except queue.Full:
        raise ApiError(503, "the server is busy (its queue is full); retry shortly", code="queue_full")


def usage(jobs: list[Job]) -> dict:
    completion = sum(j.completion_tokens for j in jobs)
    prompt = jobs[0].prompt_tokens if jobs else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def stream_chunks(model: ServedModel, jobs: list[Job], head: dict, applied: dict, request):
    """SSE chunks: the role, each choice's new text as it comes, its finish reason, [DONE]. A
    client that goes away cancels its jobs (their rows stop at the next step)."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    for i, job in enumerate(jobs):
        job.on_text = lambda text, i=i: loop.call_soon_threadsafe(events.put_nowait, (i, text))
        job.on_done = lambda i=i: loop.call_soon_threadsafe(events.put_nowait, (i, None))
    submit(model, jobs)

    def chunk(index: int, delta: dict, finish: str | None = None, **extra) -> str:
        choice = {"index": index, "delta": delta, "finish_reason": finish}
        data = {**head, "object": "chat.completion.chunk", "choices": [choice], **extra}
        return f"data: {json.dumps(data)}\n\n"

    try:
        for i in range(len(jobs)):
            yield chunk(i, {"role": "assistant", "content": ""}, steering=applied)
        remaining = len(jobs)
        while remaining:
            i, text = await events.get()
            if text is not None:
                yield chunk(i, {"content": text})
                continue
            remaining -= 1
            if jobs[i].error is not None:
                yield f"data: {json.dumps(ApiError(500, f'generation failed: {jobs[i].error}').body())}\n\n"
            else:
                yield chunk(i, {}, jobs[i].finish_reason)
        last = {**head, "object": "chat.completion.chunk", "choices": [], "usage": usage(jobs)}
        yield f"data: {json.dumps(last)}\n\n"
        yield "data: [DONE]\n\n"
    finally:  # the client went away (or the stream ended): free the rows
        for job in jobs:
            job.cancelled.set()
