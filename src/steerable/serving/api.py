"""`steerable serve`: an OpenAI-compatible chat completions API (and images API, for image
models) with one `steering` field for every method, on FastAPI.

    POST /v1/chat/completions   messages, max_tokens, temperature, top_p, seed, n, stop, stream
                                (SSE, ending `data: [DONE]`; the usage chunk only with
                                stream_options.include_usage), and `steering` (the openai client
                                sends it through `extra_body`):
                                  weights     a preference (by name or position)  RiC, MOSLIM and
                                                                                  the expert mixings
                                  mapping     linf | l2 | linear                  RiC, MOSLIM
                                  targets     normalised targets per objective    RiC
                                  levels      levels 1..L for any objectives      MOSLIM
                                  examples    [{prompt, chosen, rejected}, ...]   NP-DPO
                                  divergence  alpha in [0, 1] (0: reverse KL)     MOD
                                The response echoes what was applied: `steering` in the body
                                (streamed: the first chunk) and the `x-steering` header (JSON),
                                which clients that keep only the text can still read.
    POST /v1/images/generations model, prompt, n, size (the model's own), response_format
                                (b64_json), seed, steering as above, and guidance_scale /
                                num_inference_steps (unset: the model's); the reply's data
                                holds base64 PNGs, beside the steering applied and each
                                image's objective scores. Rows of different steering are
                                sampled together (`engine.ImageEngine`), each from its own seed.
    POST /v1/score              {model, prompt, responses}: each objective's raw and normalised
                                score of each response (what the playground plots)
    GET  /v1/models             each model's method, objectives, levels and accepted steering; a
                                text model's `mixing` (what its experts mix per request:
                                log-probabilities, outputs or weights; null for one model) and
                                `forwards_per_token` (a token's cost in base-model forwards)
    GET  /v1/models/{id}        one of them
    GET  /health
    GET  /                      the playground: two steerings of one prompt side by side

Request bodies are typed by the pydantic models of `protocol.py` (a field cannot skip
validation); steering is checked by the library's own code (`Preference`, the tag checks, the
examples check), so the server and the Python API refuse the same things. Errors use OpenAI's
body, {"error": {"message", "type", "param", "code"}}: 400 for bad values and steering, 400 (code
scoring_failed) from /v1/score when an objective's scorer fails (the message names the objective),
401 for a missing or wrong API key, 403 from /v1/score for a model whose py: scorer is not trusted
here (the server needs --trust-remote-code), 404 for an unknown model or path, 405 for a wrong
method, 413 for a body over the limit, 422 for a body that is not JSON Python can read, 502 for an
upstream (proxy mode) that fails, 503 with Retry-After when a queue is full (the engine's, or the
requests waiting for a model's steering thread) or, from `local.py`'s protocol, when the server
is at its concurrency limit; a generic 500 (the cause goes to the server's log). A client that
disconnects cancels its request, streamed or not; one that left before its answer shows as 499 in
the access log (nginx's "client closed request").

Steering, prompt rendering and scoring run on each model's own one-thread executor, off the event
loop: a model whose steering is slow (NP-DPO's pair encoder) makes only its own requests wait.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import queue
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from steerable import methods
from steerable.errors import SteerableError
from steerable.evaluation.images import image_scores
from steerable.serving.engine import BatchEngine, ImageEngine, ImageJob, Job
from steerable.serving.protocol import (
    ApiError,
    ChatCompletionRequest,
    ImageGenerationRequest,
    ScoreRequest,
    validation_error,
)

GENERATION_FAILED = "generation failed; the server's log has the details"  # a 500's whole message
log = logging.getLogger(__name__)
PLAYGROUND = (files("steerable.serving") / "playground.html").read_text()


@dataclass
class ServedModel:
    """A model the server answers for: a steerable model directory (its SteerablePolicy, or for
    a method whose `modality` is image, its image policy) or a base model by id or alias (no
    steering: the prompting floor's model, as it is)."""

    id: str
    method: str
    model: object
    tokenizer: object
    policy: object | None = None
    engine: BatchEngine | ImageEngine | None = field(default=None, repr=False)
    modality: str = "text"  # what it makes: text (chat completions) or image (images generations)
    upstream: str | None = None  # proxy mode: the OpenAI-compatible engine that generates
    upstream_model: str | None = None
    front: dict | None = None  # the measured front recorded beside the model (the playground plots it)
    max_queue: int = 256  # calls waiting for `worker` at most (the engine's limit too); beyond, 503
    # steering, prompt checks and scoring run here, one at a time, off the event loop: a model
    # whose steering is slow (NP-DPO's pair encoder) makes only its own requests wait
    worker: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="steerable-steering"), repr=False
    )
    waiting: int = field(default=0, repr=False)  # calls queued or running on `worker`

    @classmethod
    def proxy(
        cls, spec: str, upstream: str, upstream_model: str | None = None, max_queue: int = 256
    ) -> ServedModel:
        """A RiC or MOSLIM directory served in front of `upstream` (an OpenAI-compatible base URL
        ending in /v1) that serves its merged model (`steerable export`): the steering is
        rendered into the messages here and the request forwarded; no weights are loaded."""
        from steerable.defaults import load_tokenizer
        from steerable.policy import SteerablePolicy, load_manifest

        manifest = load_manifest(spec)
        if not methods.get(manifest.method).in_prompt:
            in_prompt = methods.names(lambda method: method.in_prompt and method.trainable)
            raise SteerableError(
                f"{spec} holds a {manifest.method!r} model; proxy mode serves models steered through "
                f"the prompt ({', '.join(in_prompt)}): serve it without --upstream"
            )
        policy = SteerablePolicy(None, load_tokenizer(str(spec)), manifest)
        name = Path(spec).resolve().name
        return cls(
            name,
            manifest.method,
            None,
            policy.tokenizer,
            policy,
            upstream=upstream.rstrip("/"),
            upstream_model=upstream_model,
            max_queue=max_queue,
        )

    @classmethod
    def load(
        cls,
        spec: str,
        max_batch: int = 32,
        max_queue: int = 256,
        trust_remote_code: bool = False,
        method: str | None = None,
    ):
        """The model of `spec` (a model directory, or a base model by id or alias), its id the
        directory's name; `method`: a directory served as another method that reads it (a soups
        directory's experts as "mod" or "lora-mix"), its id then "NAME:METHOD", so that one
        directory can be served under several mixings side by side."""
        from steerable.evaluation.report import read_front
        from steerable.policy import MANIFEST, SteerablePolicy, load_manifest

        path = Path(spec)
        written_by = load_manifest(path).method if (path / MANIFEST).is_file() else None
        if method is not None and written_by is None:
            raise SteerableError(
                f"{spec} is not a steerable model directory (no {MANIFEST}); {method}={spec} serves a "
                f"directory as {method}: give one that `steerable train` wrote"
            )
        record = None if written_by is None else methods.get(method or written_by)
        if record is not None:
            record.check_reads(written_by, path)
        as_other = record is not None and record.name != written_by  # e.g. a soups directory as mod
        name = path.resolve().name + (f":{record.name}" if as_other else "")
        if record is not None and record.modality == "image":  # its method's image policy loads it
            policy = record.image_policy().from_pretrained(path, trust_remote_code=trust_remote_code)
            served = cls(name, record.name, None, None, policy, modality="image", max_queue=max_queue)
            served.front = read_front(path, policy.rewards)
            served.engine = ImageEngine(policy, max_batch, max_queue)
            return served
        if record is not None:
            policy = SteerablePolicy.from_pretrained(
                path, trust_remote_code=trust_remote_code, method=record.name
            )
            served = cls(name, policy.method, policy.model, policy.tokenizer, policy, max_queue=max_queue)
            if not as_other:  # the front recorded beside it measures the directory as its own method
                served.front = read_front(path, policy.rewards)
        else:
            from steerable.defaults import load_causal_lm

            model, tokenizer = load_causal_lm(spec, trust_remote_code=trust_remote_code)
            name = spec if not path.exists() else path.resolve().name
            served = cls(name, "base", model, tokenizer, max_queue=max_queue)
        # what conditions the model on each row's steering besides the prompt (None: nothing)
        conditioner = served.policy.steering.conditioner(served.policy) if served.policy is not None else None
        served.engine = BatchEngine(served.model, served.tokenizer, conditioner, max_batch, max_queue)
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
            "modality": self.modality,
        }
        if self.modality == "image":  # what an images request may ask, and its defaults
            size = self.policy.size
            card.update(size=f"{size}x{size}", guidance_scale=self.policy.guidance,
                        num_inference_steps=self.policy.steps)  # fmt: skip
        else:  # how a token is made: experts mixed per row (and at what cost), or one model
            card["mixing"] = getattr(self.model, "mixes", None)
            card["forwards_per_token"] = getattr(self.model, "forwards", 1)
        if self.policy is not None:
            card["objectives"] = self.policy.names
            card["levels"] = self.policy.levels
            card["default_mapping"] = self.policy.mapping.default
        card["steering"] = list(self.accepts)
        if self.front is not None:
            card["front"] = self.front
        return card

    @property
    def accepts(self) -> tuple[str, ...]:
        """The steering keys a request may carry (a base model takes none)."""
        return () if self.policy is None else methods.get(self.method).steering

    @property
    def context_length(self) -> int | None:
        if self.model is None:  # proxy mode: the upstream checks its own context
            return None
        config = self.model.config.get_text_config()
        return getattr(config, "max_position_embeddings", None)

    def steer(self, messages: list[dict], steering: Mapping | None) -> tuple[list[dict], dict, object]:
        """(the conversation with its steering's tags, the steering applied, the condition its
        rows carry: what the method's conditioner is given, None for steering in the prompt)
        for a checked request."""
        if self.policy is None:  # a base model, as it is
            self.checked(steering)
            return messages, {}, None
        applied, condition, echo = self.checked(steering)
        steered = with_param("messages", lambda: self.policy.steered_messages(messages, applied))
        return steered, echo, condition

    def checked(self, steering: Mapping | None):
        """The policy's `request` of a request's `steering` (what it applies, for a text policy
        with the condition its rows carry, and the echo), its keys checked against what this
        model takes; None for a base model (which takes no steering)."""
        steering = dict(steering or {})
        allowed = self.accepts
        unknown = [k for k in steering if k not in allowed]
        if unknown:
            takes = f"it takes {list(allowed)}" if allowed else "it takes no steering"
            raise ApiError(400, f"steering {unknown} does not apply to {self.id} ({self.method}); {takes}",
                           f"steering.{unknown[0]}", "invalid_steering")  # fmt: skip
        if self.policy is None:
            return None
        try:
            return self.policy.request(steering)
        except SteerableError as err:
            raise ApiError(400, str(err), self.refused_key(steering), "invalid_steering")

    def refused_key(self, steering: dict) -> str:
        """The field a refused `steering` names: of several keys, the first refused alone (MOD's
        divergence beside valid weights), else the first given (a refusal of the keys together:
        negative weights at a divergence that does not define them); `mapping` is read with the
        weights, so a bad mapping names them."""
        given = [k for k in self.accepts if k != "mapping" and steering.get(k) is not None]
        for key in given if len(given) > 1 else ():
            try:
                self.policy.request({key: steering[key]})
            except SteerableError:
                return f"steering.{key}"
        return f"steering.{given[0]}" if given else "steering"

    async def run(self, fn, *args):
        """`fn(*args)` on this model's own worker thread (vLLM gives each server its own
        one-thread executor for tokenising, the same way); a 503 when `max_queue` calls already
        wait for it (counted on the event loop, so no lock)."""
        if self.waiting >= self.max_queue:
            raise ApiError(503, f"{self.id} is busy (its queue is full); retry shortly", code="queue_full")
        self.waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.worker, fn, *args)
        finally:
            self.waiting -= 1

    def render(self, messages: list[dict]) -> str:
        from steerable.generation import render_chat

        return with_param("messages", lambda: render_chat(self.tokenizer, messages))


def with_param(param: str, fn):
    """`fn()`, its SteerableError (and the warning-free checks behind it) as a 400 on `param`."""
    try:
        return fn()
    except SteerableError as err:
        raise ApiError(400, str(err), param, steering_code(param))


def steering_code(param: str | None) -> str | None:
    """The error code of a refused field: `invalid_steering` for what is under `steering`."""
    return "invalid_steering" if (param or "").startswith("steering") else None


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
    steering: dict
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the usage


def validated(schema: type[BaseModel], body: object) -> BaseModel:
    """`body` as `schema`, or a 400 naming the first field it gets wrong."""
    try:
        return schema.model_validate(body)
    except ValidationError as err:
        message, param = validation_error(err)
        raise ApiError(400, message, param, steering_code(param))


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
    if model.modality == "image":
        raise ApiError(400, f"{model.id} makes images, not text: POST /v1/images/generations", "model")
    if request.model_extra:
        log.debug("fields present in the request but ignored: %s", sorted(request.model_extra))
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
    if model.modality == "image":
        raise ApiError(
            400, f"{model.id} makes images: /v1/images/generations answers with their scores", "model"
        )
    return model, request.prompt, request.responses


def make_jobs(request: ChatRequest, steered: list[dict], condition) -> list[Job]:
    """The request's n jobs for its `steered` conversation: its own seed for the first, seed + i
    for the i-th."""
    model = request.model
    text = model.render(steered)
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
            condition=condition,
        )
        for i in range(request.n)
    ]


# --- images -----------------------------------------------------------------------------------
@dataclass
class ImageRequest:
    model: ServedModel
    prompt: str
    n: int
    seed: int | None
    guidance: float
    steps: int
    steering: dict


def parse_images(body: object, models: dict[str, ServedModel]) -> ImageRequest:
    """A /v1/images/generations body checked against `ImageGenerationRequest` and the model (an
    image model; its own size; base64 only; no more steps than its scheduler has)."""
    request = validated(ImageGenerationRequest, body)
    model = served_model(request.model, models)
    if model.modality != "image":
        raise ApiError(400, f"{model.id} makes text, not images: POST /v1/chat/completions", "model")
    if not request.prompt.strip():
        raise ApiError(400, "prompt must have text", "prompt")
    size = f"{model.policy.size}x{model.policy.size}"
    if request.size is not None and request.size != size:
        raise ApiError(400, f"size must be {size!r}, the size {model.id} makes, got {request.size!r}", "size")
    if request.response_format != "b64_json":
        raise ApiError(
            400,
            f"response_format {request.response_format!r} is not served: images come back inline as "
            "base64 PNGs; ask for 'b64_json'",
            "response_format",
        )
    steps = model.policy.steps if request.num_inference_steps is None else request.num_inference_steps
    if steps > model.policy.max_steps:
        raise ApiError(400, f"num_inference_steps must be at most {model.policy.max_steps}, got {steps}",
                       "num_inference_steps")  # fmt: skip
    return ImageRequest(
        model=model,
        prompt=request.prompt,
        n=request.n,
        seed=request.seed,
        guidance=model.policy.guidance if request.guidance_scale is None else request.guidance_scale,
        steps=steps,
        steering=request.steering.model_dump(exclude_none=True),
    )


def image_jobs(request: ImageRequest) -> tuple[list[ImageJob], dict, int]:
    """(the request's rows, the steering applied, the seed of its first row): its caption with
    the steering's tags, checked against the text encoder's budget now (not a 500 later), and
    row i seeded seed + i."""
    policy = request.model.policy
    targets, echo = request.model.checked(request.steering)
    text = with_param("prompt", lambda: policy.prompt(request.prompt, targets))
    with_param("prompt", lambda: policy.parts.token_ids([text]))
    seed = secrets.randbits(62) if request.seed is None else request.seed
    rows = [ImageJob(text, seed + i, request.guidance, request.steps) for i in range(request.n)]
    return rows, echo, seed


def image_data(model: ServedModel, prompt: str, jobs: list[ImageJob]) -> tuple[list[dict], dict | None]:
    """Each image as base64 PNG, and their objectives' scores ({objectives, raw, normalised}, a
    row per image); no scores where a scorer may not run here or fails (the images still come)."""
    data = []
    for job in jobs:
        png = io.BytesIO()
        job.image.save(png, format="PNG")
        data.append({"b64_json": base64.b64encode(png.getvalue()).decode()})
    rewards = model.policy.rewards
    raw, why = image_scores(rewards, [prompt] * len(jobs), [j.image for j in jobs])
    if raw is None:
        log.warning("%s: the images' scores are left out: %s", model.id, why)
        return data, None
    normalised = rewards.normalise(raw).tolist()
    return data, {"objectives": rewards.names, "raw": raw.tolist(), "normalised": normalised}


# --- the app --------------------------------------------------------------------------------
def create_app(
    models: list[ServedModel],
    api_key: str | None = None,
    max_body_bytes: int = 1 << 20,
    max_tokens_limit: int = 1024,
):
    served = {m.id: m for m in models}

    async def authorise(request: Request) -> None:
        if api_key is not None and request.headers.get("authorization") != f"Bearer {api_key}":
            raise ApiError(401, "missing or wrong API key (Authorization: Bearer KEY)")

    app = FastAPI(title="steerable", docs_url=None, redoc_url=None)
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authorise)])

    @app.exception_handler(ApiError)
    async def api_error(_, err: ApiError):
        return error_response(err)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):  # unknown path, wrong method
        message = f"{err.detail}: {request.method} {request.url.path}"
        return error_response(ApiError(err.status_code, message), err.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_, err: RequestValidationError):  # a typed path or query parameter (vLLM: 400)
        first = err.errors()[0]
        param = ".".join(str(p) for p in first["loc"][1:]) or None
        return error_response(ApiError(400, f"{param}: {first['msg']}", param))

    @app.exception_handler(ClientDisconnect)
    async def gone(request: Request, _):  # the client left (mid-upload or mid-wait): nobody to answer
        log.info("a client went away before its answer: %s %s", request.method, request.url.path)
        return Response(status_code=499)  # nginx's "client closed request", for the access log

    @app.exception_handler(Exception)
    async def unexpected(_, err: Exception):  # uvicorn logs the traceback; the client gets no internals
        return error_response(ApiError(500, "internal server error; the server's log has the details"))

    @app.get("/", response_class=HTMLResponse)
    async def playground():
        return HTMLResponse(PLAYGROUND)

    @v1.post("/score")
    async def score(request: Request):
        """The objectives' scores of responses to a prompt (what the playground shows)."""
        model, prompt, responses = parse_score(parse_json(await read_body(request, max_body_bytes)), served)
        rewards = model.policy.rewards
        if rewards.refusal is not None:  # a scorer this machine does not trust: the fix is the server's flag
            raise ApiError(403, rewards.refusal, "model", "untrusted_scorer")
        try:  # the objectives' own failures (a py: function raising, a NaN score): the scorer's fault
            raw = await model.run(rewards.score, [prompt] * len(responses), responses)
        except SteerableError as err:
            raise ApiError(400, str(err), "model", "scoring_failed")
        return {
            "objectives": rewards.names,
            "raw": raw.tolist(),
            "normalised": rewards.normalise(raw).tolist(),
        }

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": list(served)}

    @v1.get("/models")
    async def list_models():
        return {"object": "list", "data": [m.card() for m in served.values()]}

    @v1.get("/models/{model_id:path}")
    async def retrieve_model(model_id: str):
        return served_model(model_id, served).card()

    @v1.post("/chat/completions")
    async def chat(request: Request):
        body = parse_json(await read_body(request, max_body_bytes))
        parsed = parse_request(body, served, max_tokens_limit)
        model = parsed.model
        steered, applied, condition = await model.run(model.steer, parsed.messages, parsed.steering)
        # the body's `steering` again, for clients that keep only the text (LangChain's ChatOpenAI)
        headers = {"x-steering": json.dumps(applied, ensure_ascii=True)}
        if model.upstream is not None:
            return await forward(model, body, steered, applied, headers)
        jobs = await model.run(make_jobs, parsed, steered, condition)
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model.id}
        if parsed.stream:
            # queued before the response starts: a full queue is a 503, not an empty 200 stream
            events = stream_events(jobs)
            submit(model, jobs)
            chunks = stream_chunks(jobs, events, head, applied, parsed.include_usage)
            return JobsStream(jobs, chunks, media_type="text/event-stream", headers=headers)
        await finished_unless_gone(request, model, jobs)
        if any(j.error is not None for j in jobs):
            raise ApiError(500, GENERATION_FAILED)
        answer = {
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
        return JSONResponse(answer, headers=headers)

    @v1.post("/images/generations")
    async def images(request: Request):
        parsed = parse_images(parse_json(await read_body(request, max_body_bytes)), served)
        model = parsed.model
        jobs, applied, seed = await model.run(image_jobs, parsed)
        await finished_unless_gone(request, model, jobs)
        if any(j.error is not None for j in jobs):
            raise ApiError(500, GENERATION_FAILED)
        data, scores = await model.run(image_data, model, parsed.prompt, jobs)
        answer = {
            "created": int(time.time()),
            "data": data,
            "model": model.id,
            "steering": applied,
            "seed": seed,
            "guidance_scale": parsed.guidance,
            "num_inference_steps": parsed.steps,
        }
        if scores is not None:
            answer["scores"] = scores
        return JSONResponse(answer, headers={"x-steering": json.dumps(applied, ensure_ascii=True)})

    app.include_router(v1)
    return app


def error_response(err: ApiError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """OpenAI's error body; a 503 says when to retry."""
    headers = {**(headers or {}), **({"Retry-After": "1"} if err.status == 503 else {})}
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


async def forward(model: ServedModel, body: dict, steered: list[dict], applied: dict, headers: dict):
    """Proxy mode: the request with its steering rendered into the messages, to the upstream
    engine; its answer comes back with the applied steering (streamed: in the first chunk) and
    `headers`."""
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
    stream = bool(body.get("stream"))
    event_stream = response.headers.get("content-type", "").startswith("text/event-stream")
    if response.status_code != 200 or (stream and not event_stream):
        text = (await response.aread()).decode(errors="replace")[:500]
        await client.aclose()
        what = f"answered {response.status_code}" if response.status_code != 200 else "sent no event stream"
        raise ApiError(502, f"the upstream {what}: {text}", code="upstream_error")
    if not stream:
        text = await response.aread()
        await client.aclose()
        data = upstream_json(text)
        if data is None:
            shown = text.decode(errors="replace")[:200]
            raise ApiError(502, f"the upstream answered with no JSON object: {shown}", code="upstream_error")
        return JSONResponse({**data, "model": model.id, "steering": applied}, headers=headers)

    async def relay():
        first = True
        try:
            async for line in response.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    chunk = upstream_json(line[len("data: ") :])
                    if chunk is None:  # the status is sent: end the stream with OpenAI's error body
                        log.error(
                            "the upstream %s sent a chunk that is not JSON: %.200s", model.upstream, line
                        )
                        error = ApiError(
                            502, "the upstream sent a chunk that is not JSON", code="upstream_error"
                        )
                        yield f"data: {json.dumps(error.body())}\n\ndata: [DONE]\n\n"
                        return
                    chunk["model"] = model.id
                    if first:
                        chunk["steering"], first = applied, False
                    line = "data: " + json.dumps(chunk)
                if line:
                    yield line + "\n\n"
        finally:
            await response.aclose()
            await client.aclose()

    return StreamingResponse(relay(), media_type="text/event-stream", headers=headers)


def upstream_json(text: str | bytes) -> dict | None:
    """An upstream's reply or chunk as a JSON object; None if it is not one."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested too deeply
        return None
    return data if isinstance(data, dict) else None


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


async def finished_unless_gone(request: Request, model: ServedModel, jobs: list[Job]) -> None:
    """Queue `jobs` and wait until they are done; a client that disconnects first cancels them
    (their rows stop at the next step), as a stream's does (vLLM's `with_cancellation` too)."""
    loop, finished, left = asyncio.get_running_loop(), asyncio.Event(), len(jobs)

    def one_done() -> None:  # on the event loop
        nonlocal left
        left -= 1
        if not left:
            finished.set()

    for job in jobs:
        job.on_done = lambda: loop.call_soon_threadsafe(one_done)
    submit(model, jobs)
    done = asyncio.ensure_future(finished.wait())
    gone = asyncio.ensure_future(disconnected(request))
    try:
        await asyncio.wait((done, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not done.done():
            done.cancel()
            for job in jobs:
                job.cancelled.set()
    if not done.done():
        raise ClientDisconnect()
    log_failures(model.id, jobs)


async def disconnected(request: Request) -> None:
    """Returns when the client has gone (the body is read: all that can come is http.disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def log_failures(model_id: str, jobs: list[Job]) -> None:
    """The server's log gets what failed (the client gets a generic 500)."""
    for job in jobs:
        if job.error is not None:
            log.error("generation failed on %s", model_id, exc_info=job.error)


def usage(jobs: list[Job]) -> dict:
    completion = sum(j.completion_tokens for j in jobs)
    prompt = jobs[0].prompt_tokens if jobs else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def stream_events(jobs: list[Job]) -> asyncio.Queue:
    """The queue each job's new text, (i, text), and its end, (i, None), arrive on."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    for i, job in enumerate(jobs):
        job.on_text = lambda text, i=i: loop.call_soon_threadsafe(events.put_nowait, (i, text))
        job.on_done = lambda i=i: loop.call_soon_threadsafe(events.put_nowait, (i, None))
    return events


class JobsStream(StreamingResponse):
    """A streamed answer that frees its jobs' rows however it ends: finished, or its client gone
    (even before the first chunk)."""

    def __init__(self, jobs: list[Job], *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.jobs = jobs

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            for job in self.jobs:
                job.cancelled.set()


async def stream_chunks(
    jobs: list[Job], events: asyncio.Queue, head: dict, applied: dict, include_usage: bool
) -> AsyncIterator[str]:
    """SSE chunks of queued `jobs`: the role, each choice's new text as it comes, its finish
    reason, the usage when the request's stream_options asked for it, [DONE]."""

    def chunk(index: int, delta: dict, finish: str | None = None, **extra) -> str:
        choice = {"index": index, "delta": delta, "finish_reason": finish}
        data = {**head, "object": "chat.completion.chunk", "choices": [choice], **extra}
        return f"data: {json.dumps(data)}\n\n"

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
            log_failures(head["model"], [jobs[i]])
            error = ApiError(500, GENERATION_FAILED)
            yield f"data: {json.dumps(error.body())}\n\n"
        else:
            yield chunk(i, {}, jobs[i].finish_reason)
    if include_usage:
        last = {**head, "object": "chat.completion.chunk", "choices": [], "usage": usage(jobs)}
        yield f"data: {json.dumps(last)}\n\n"
    yield "data: [DONE]\n\n"
