"""Request validation of `steerable serve` through raw HTTP: a malformed, oversized, deeply nested or
wrongly typed field is a 4xx with OpenAI's error body naming the field, never a 5xx, and the server
answers the next request as before (tiny models on loopback)."""

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steerable.serving.api import ServedModel, create_app
from steerable.serving.local import BackgroundServer

LIMIT = 16  # the server's max_tokens limit
BIG = "7" * 400  # an integer no float holds
HUGE = "7" * 5000  # an integer over Python's int-from-text digit limit
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture(scope="module")
def server(tiny_ric):
    _, ric = tiny_ric
    models = [ServedModel.load(str(ric), max_batch=8, max_queue=64), ServedModel.load("tiny")]
    running = BackgroundServer(create_app(models, max_tokens_limit=LIMIT))
    yield running, models[0].id
    running.stop()


@pytest.fixture(scope="module")
def http(server):
    running, _ = server
    with httpx.Client(base_url=running.url, timeout=60) as client:
        yield client


def fake_upstream():
    """An OpenAI-compatible engine's stand-in: /v1 answers every completion with "ok" (streamed
    or not), /broken/v1 with 200 and a page that is not JSON."""
    from fastapi import FastAPI, Request
    from fastapi.responses import PlainTextResponse, StreamingResponse

    upstream = FastAPI()

    @upstream.post("/v1/chat/completions")
    async def complete(request: Request):
        body = await request.json()
        head = {"id": "c", "created": 0, "model": body["model"]}
        if not body.get("stream"):
            choice = {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
            return {**head, "object": "chat.completion", "choices": [choice]}
        chunk = {**head, "object": "chat.completion.chunk"}
        events = [
            {**chunk, "choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": None}]},
            {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
        lines = [f"data: {json.dumps(event)}\n\n" for event in events] + ["data: [DONE]\n\n"]
        return StreamingResponse(iter(lines), media_type="text/event-stream")

    @upstream.post("/broken/v1/chat/completions")
    async def broken():
        return PlainTextResponse("<html>a proxy's error page</html>")

    @upstream.post("/garbled/v1/chat/completions")
    async def garbled():
        lines = ["data: {not json\n\n", "data: [DONE]\n\n"]
        return StreamingResponse(iter(lines), media_type="text/event-stream")

    return upstream


@pytest.fixture(scope="module")
def proxied(tiny_ric):
    """The RiC model in proxy mode in front of `fake_upstream` (its id), and ones in front of the
    broken and the garbled upstream (ids "broken", "garbled")."""
    _, ric = tiny_ric
    upstream = BackgroundServer(fake_upstream())
    proxy = ServedModel.proxy(str(ric), upstream.url + "/v1")
    broken = ServedModel.proxy(str(ric), upstream.url + "/broken/v1")
    garbled = ServedModel.proxy(str(ric), upstream.url + "/garbled/v1")
    broken.id, garbled.id = "broken", "garbled"
    running = BackgroundServer(create_app([proxy, broken, garbled], max_tokens_limit=LIMIT))
    with httpx.Client(base_url=running.url, timeout=60) as client:
        yield client, proxy.id
    running.stop()
    upstream.stop()


def body(model: str, **fields) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, **fields}


def post(http, payload, path="/v1/chat/completions") -> httpx.Response:
    """`payload` as JSON (a str is sent as it is: raw JSON text the json module would not write)."""
    content = payload if isinstance(payload, str | bytes) else json.dumps(payload)
    return http.post(path, content=content, headers={"content-type": "application/json"})


def assert_openai_error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and "\n" not in error["message"]
    assert "Traceback" not in error["message"] and "internal error" not in error["message"]
    assert error["param"] == param, error
    return error


def with_raw(model: str, marker: str, raw: str, **fields) -> str:
    """The body with `marker` (a string value) replaced by raw JSON text."""
    return json.dumps(body(model, **fields)).replace(json.dumps(marker), raw)


WRONG_TYPES = [
    ({"temperature": "1"}, "temperature"),
    ({"temperature": True}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"n": 1.0}, "n"),
    ({"n": 9}, "n"),
    ({"seed": "7"}, "seed"),
    ({"stream": "yes"}, "stream"),
    ({"stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
    ({"stop": [""]}, "stop[0]"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": 5}, "stop"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "bot", "content": "Hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    (
        {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
        "messages[0].content[0].text",
    ),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content[0].type"),
    ({"steering": {"weights": {"brief": "1"}}}, "steering.weights.brief"),
    ({"steering": {"weights": {"brief": True}}}, "steering.weights.brief"),
    ({"steering": {"weights": ["1", 0]}}, "steering.weights[0]"),
    ({"steering": {"weights": {"many": "1"}}}, "steering.weights.many"),  # named as the union's tags
    ({"steering": {"targets": {"one": True}}}, "steering.targets.one"),
    ({"steering": {"targets": {"brief": True, "positive": 0}}}, "steering.targets.brief"),
    ({"steering": {"targets": {"brief": "0.5", "positive": 0}}}, "steering.targets.brief"),
    ({"steering": {"targets": {"brief": None, "positive": 0}}}, "steering.targets.brief"),
    ({"steering": {"targets": {"brief": [1], "positive": 0}}}, "steering.targets.brief"),
    ({"steering": {"targets": [0.5, 0.5]}}, "steering.targets"),
    ({"steering": {"levels": {"brief": "3"}}}, "steering.levels.brief"),
    ({"steering": {"mapping": 2}}, "steering.mapping"),
    ({"steering": {"examples": 5}}, "steering.examples"),
    ({"steering": {"examples": True}}, "steering.examples"),
    ({"steering": {"examples": [5]}}, "steering.examples[0]"),
    ({"steering": {"examples": [None]}}, "steering.examples[0]"),
    (
        {"steering": {"examples": [{"prompt": "a", "chosen": 1, "rejected": "c"}]}},
        "steering.examples[0].chosen",
    ),
    ({"steering": {"wieghts": [1, 0]}}, "steering.wieghts"),
    ({"steering": [1, 0]}, "steering"),
]


@pytest.mark.parametrize(("fields", "param"), WRONG_TYPES)
def test_a_wrongly_typed_field_is_a_400_naming_it(server, http, fields, param):
    _, model = server
    error = assert_openai_error(post(http, body(model, **fields)), 400, param)
    assert param in error["message"]


@pytest.mark.parametrize(
    ("steering", "param"),
    [
        (f'{{"weights": {{"brief": {BIG}, "positive": 1}}}}', "steering.weights.brief"),
        (f'{{"targets": {{"brief": {BIG}, "positive": 0}}}}', "steering.targets.brief"),
        ('{"weights": [NaN, 1]}', "steering.weights[0]"),
        ('{"weights": [1e400, 1]}', "steering.weights[0]"),
        ('{"levels": {"brief": NaN}}', "steering.levels.brief"),
        ('{"levels": {"brief": Infinity}}', "steering.levels.brief"),
        ('{"targets": {"brief": -Infinity, "positive": 0}}', "steering.targets.brief"),
    ],
)
def test_numbers_no_float_holds_are_a_400_naming_the_field(server, http, steering, param):
    _, model = server
    assert_openai_error(post(http, with_raw(model, "@", steering, steering="@")), 400, param)


def test_weights_whose_sum_overflows_are_a_400_under_every_mapping(server, http):
    _, model = server
    for mapping in ("linf", "l2", "linear"):
        steering = {"weights": {"brief": 1e308, "positive": 1e308}, "mapping": mapping}
        error = assert_openai_error(post(http, body(model, steering=steering)), 400, "steering.weights")
        assert "brief" in error["message"] and "positive" in error["message"]


def test_a_lone_surrogate_is_a_400(server, http):
    _, model = server
    lone = '"a\\ud800b"'
    content = json.dumps(body(model)).replace('"Hi"', lone)
    assert_openai_error(post(http, content), 400, "messages[0].content")
    assert_openai_error(post(http, with_raw(model, "@", f"[{lone}]", stop="@")), 400, "stop[0]")
    steering = f'{{"weights": {{{lone}: 1}}}}'
    assert_openai_error(post(http, with_raw(model, "@", steering, steering="@")), 400, "steering.weights")


def test_bodies_python_cannot_read_are_a_422(server, http):
    _, model = server
    assert_openai_error(post(http, DEEP), 422)
    assert_openai_error(post(http, with_raw(model, "@", DEEP, steering="@")), 422)
    assert_openai_error(post(http, with_raw(model, "@", HUGE, seed="@")), 422)
    assert_openai_error(post(http, b"\xff\xfe{}"), 422)
    for path in ("/v1/chat/completions", "/v1/score"):
        assert_openai_error(post(http, DEEP, path), 422)


def test_null_is_the_default_of_every_optional_field(server, http):
    _, model = server
    optional = ("temperature", "top_p", "seed", "n", "stop", "stream", "stream_options", "steering")
    answer = post(http, body(model, **dict.fromkeys(optional), max_completion_tokens=None))
    assert answer.status_code == 200, answer.text
    assert answer.json()["object"] == "chat.completion" and len(answer.json()["choices"]) == 1
    steering = dict.fromkeys(("weights", "mapping", "targets", "levels", "examples"))
    assert post(http, body(model, steering=steering)).status_code == 200


def test_max_completion_tokens_null_leaves_max_tokens_to_be_checked(server, http):
    _, model = server
    over = body(model, max_completion_tokens=None, max_tokens=2000)
    error = assert_openai_error(post(http, over), 400, "max_tokens")
    assert str(LIMIT) in error["message"]
    newer = body(model, max_completion_tokens=2000, max_tokens=2)
    assert_openai_error(post(http, newer), 400, "max_completion_tokens")
    answer = post(http, body(model, max_completion_tokens=3, max_tokens=2000, temperature=0))
    assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] <= 3


def test_openai_fields_we_do_not_use_are_accepted_and_ignored(server, http):
    _, model = server
    extra = {"frequency_penalty": 0.5, "presence_penalty": 0, "user": "u1", "logit_bias": {"50256": -100}}
    answer = post(http, body(model, **extra))
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] is not None
    named = body(model, messages=[{"role": "user", "content": [{"type": "text", "text": "Hi"}], "name": "a"}])
    assert post(http, named).status_code == 200


@pytest.mark.parametrize("mode", ["local", "proxy"])
@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ('{"frequency_penalty": NaN}', "frequency_penalty"),
        ('{"logit_bias": {"50256": -Infinity}}', "logit_bias"),
        ('{"user": "a\\ud800"}', "user"),
        ('{"metadata": {"a\\udfff": "x"}}', "metadata"),
        ('{"stream_options": {"include_usage": false, "x": [NaN]}}', "stream_options.x"),
    ],
)
def test_an_ignored_field_a_json_body_cannot_carry_is_a_400_naming_it(
    server, http, proxied, mode, raw, param
):
    """An extra field is passed on to the upstream in proxy mode, so it must be JSON that can be
    written again (finite numbers, valid Unicode); both modes refuse the same."""
    client, model = (http, server[1]) if mode == "local" else proxied
    content = json.dumps(body(model))[:-1] + ", " + raw[1:]  # the body's fields, and raw's
    error = assert_openai_error(post(client, content), 400, param)
    assert param in error["message"]


def test_an_upstream_reply_that_is_not_json_is_a_502(proxied):
    client, _ = proxied
    for stream in (False, True):
        response = post(client, body("broken", stream=stream))
        assert response.status_code == 502, response.text
        error = response.json()["error"]
        assert error["type"] == "server_error" and error["code"] == "upstream_error"
    garbled = post(client, body("garbled", stream=True))  # a stream's chunk that is not JSON
    events = [line for line in garbled.text.splitlines() if line]
    assert json.loads(events[-2][len("data: ") :])["error"]["code"] == "upstream_error"
    assert events[-1] == "data: [DONE]"
    assert post(client, body(proxied[1])).json()["choices"][0]["message"]["content"] == "ok"


def test_steering_refuses_an_unknown_field_but_an_example_row_may_carry_more():
    from pydantic import ValidationError

    from steerable.serving.protocol import ChatCompletionRequest, validation_error

    row = {"prompt": "p", "chosen": "a", "rejected": "b", "user": 3}
    chat = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}
    request = ChatCompletionRequest.model_validate({**chat, "steering": {"examples": [row]}})
    assert request.steering.model_dump(exclude_none=True)["examples"][0]["chosen"] == "a"
    with pytest.raises(ValidationError) as caught:
        ChatCompletionRequest.model_validate({**chat, "steering": {"level": {"brief": 2}}})
    assert validation_error(caught.value) == ("steering.level is not a field of steering", "steering.level")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"temperature": 3}, "temperature must be at most 2, got 3"),
        ({"top_p": 0}, "top_p must be greater than 0, got 0"),
        ({"stream": "yes"}, "stream must be true or false, got 'yes'"),
        ({"n": 1.0}, "n must be an integer, got 1.0"),
        ({"stop": [""]}, "stop[0] must have at least 1 character(s)"),
        ({"stop": ["a"] * 5}, "stop must have at most 4 item(s), not 5"),
        ({"messages": []}, "messages must have at least 1 item(s)"),
        ({"steering": {"targets": [1]}}, "steering.targets must be a JSON object"),
        (
            {"messages": [{"role": "bot", "content": "Hi"}]},
            "messages[0].role must be 'system', 'user' or 'assistant', got 'bot'",
        ),
    ],
)
def test_a_refusal_says_what_the_field_must_be_in_our_words(fields, message):
    """Messages by pydantic's error type, not by rewording its messages (whose wording may change)."""
    from pydantic import ValidationError

    from steerable.serving.protocol import ChatCompletionRequest, validation_error

    with pytest.raises(ValidationError) as caught:
        ChatCompletionRequest.model_validate(body("m", **fields))
    assert validation_error(caught.value)[0] == message


def test_a_score_body_is_checked_like_a_chat_body(server, http):
    _, model = server
    assert_openai_error(post(http, [model], "/v1/score"), 400)
    cases = [
        ({"prompt": 5, "responses": ["a"]}, "prompt"),
        ({"prompt": "q", "responses": []}, "responses"),
        ({"prompt": "q", "responses": ["a", 5]}, "responses[1]"),
        ({"prompt": "q", "responses": ["a"] * 65}, "responses"),
        ({"responses": ["a"]}, "prompt"),
    ]
    for fields, param in cases:
        assert_openai_error(post(http, {"model": model, **fields}, "/v1/score"), 400, param)
    missing = post(http, {"model": "nope", "prompt": "q", "responses": ["a"]}, "/v1/score")
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "model"
    scored = post(http, {"model": model, "prompt": "q", "responses": ["a b", "c"]}, "/v1/score")
    assert scored.status_code == 200 and len(scored.json()["raw"]) == 2


# --- the fuzz test ----------------------------------------------------------------------------
# Hostile values: every JSON type, numbers no float holds, non-finite numbers, lone surrogates,
# deep nesting and long text, as raw JSON text (the json module writes none of the first kinds).
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", BIG, "-" + BIG, HUGE, "0", "-1", "1.5"]),
    st.text(max_size=20).map(json.dumps),
    st.sampled_from(['"a\\ud800b"', '"\\udfff"', '""', '"brief"', '"linf"', '"text"', '"user"']),
).map(lambda v: json.dumps(v) if v is None or isinstance(v, bool) else v)
NASTY = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda items: "[" + ",".join(items) + "]"),
        st.dictionaries(
            st.sampled_from(['"brief"', '"positive"', '"x"', '"a\\ud800"']), inner, max_size=3
        ).map(lambda d: "{" + ",".join(f"{k}:{v}" for k, v in d.items()) + "}"),
    ),
    max_leaves=8,
) | st.sampled_from([DEEP, '"' + "x" * 3000 + '"', "[" + ",".join(["1"] * 500) + "]"])

# Every field a request can carry, as a path into a valid body of its endpoint.
CHAT_FIELDS = [
    ("model",),
    ("messages",),
    ("messages", 0),
    ("messages", 0, "role"),
    ("messages", 0, "content"),
    ("messages", 0, "content", 0),
    ("messages", 0, "content", 0, "type"),
    ("messages", 0, "content", 0, "text"),
    ("max_tokens",),
    ("max_completion_tokens",),
    ("temperature",),
    ("top_p",),
    ("seed",),
    ("n",),
    ("stop",),
    ("stop", 0),
    ("stream",),
    ("stream_options",),
    ("stream_options", "include_usage"),
    ("steering",),
    ("steering", "weights"),
    ("steering", "weights", "brief"),
    ("steering", "weights", 0),
    ("steering", "mapping"),
    ("steering", "targets"),
    ("steering", "targets", "brief"),
    ("steering", "levels"),
    ("steering", "levels", "brief"),
    ("steering", "examples"),
    ("steering", "examples", 0),
    ("steering", "examples", 0, "prompt"),
    ("frequency_penalty",),  # fields we ignore (proxy mode passes them on)
    ("user",),
    ("stream_options", "x"),
]
SCORE_FIELDS = [("model",), ("prompt",), ("responses",), ("responses", 0)]
STEERING = {
    "weights": [1, 1],
    "mapping": "l2",
    "targets": {"brief": 0.1, "positive": 0.1},
    "levels": {"brief": 2},
    "examples": [{"prompt": "p", "chosen": "a", "rejected": "b"}],
}


def valid_chat(model: str, path: tuple) -> dict:
    """A valid chat body (or one a model refuses with a 400: levels, examples) in which `path` exists."""
    parts = path[2:4] == ("content", 0)
    steering = {}
    if path[0] == "steering" and len(path) > 1:
        steering = {path[1]: {"brief": 1, "positive": 1} if "brief" in path[1:] else STEERING[path[1]]}
    return {
        "model": model,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}] if parts else "Hi"}],
        "max_tokens": 2,
        "stop": ["\n\n"],
        "stream_options": {"include_usage": True},
        "steering": steering,
    }


@st.composite
def hostile_bodies(draw, model: str, score: bool) -> str:
    """Raw JSON text: a valid body with one to three of its fields replaced by hostile values."""
    fields = SCORE_FIELDS if score else CHAT_FIELDS
    if score:
        payload = {"model": model, "prompt": "q", "responses": ["a", "b"]}
    else:
        payload = valid_chat(model, draw(st.sampled_from(fields)))
        payload["stream"] = draw(st.booleans())
    swaps = []
    for number in range(draw(st.integers(1, 3))):
        *parents, last = draw(st.sampled_from(fields))
        node = payload
        try:
            for key in parents:
                node = node[key]
            node[last] = f"@{number}@"
        except (KeyError, IndexError, TypeError):  # a field an earlier swap replaced
            continue
        swaps.append((f'"@{number}@"', draw(NASTY)))
    text = json.dumps(payload)
    for marker, raw in swaps:
        text = text.replace(marker, raw)
    return text


BROKEN = st.sampled_from(
    [b"", b"{", b"null", b"[]", b"7", b'"x"', b"{not json}", b"\xff\xfe", b'{"model": "a"', b"\x00" * 64]
)


def fuzz(http, model: str) -> None:
    """300 hostile requests to `model`: none gets a 5xx, each refusal is OpenAI's error body, and
    the server answers a good request afterwards."""
    chat, score = "/v1/chat/completions", "/v1/score"
    requests = st.one_of(
        st.tuples(hostile_bodies(model, score=False), st.just(chat)),
        st.tuples(hostile_bodies(model, score=True), st.just(score)),
        st.tuples(BROKEN, st.sampled_from([chat, score])),
    )

    @settings(
        max_examples=300,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(requests)
    def check(request):
        content, path = request
        response = post(http, content, path)
        assert response.status_code < 500, (content[:300], response.text[:300])
        if response.status_code >= 400:
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}, response.text
            assert isinstance(error["message"], str) and "\n" not in error["message"]
            assert error["param"] is None or isinstance(error["param"], str)
        elif "text/event-stream" in response.headers["content-type"]:
            assert response.text.rstrip().endswith("data: [DONE]") and '"error"' not in response.text

    check()
    assert http.get("/health").json()["status"] == "ok"
    assert post(http, body(model, temperature=0)).status_code == 200


def test_fuzzed_requests_never_get_a_5xx_and_the_server_stays_healthy(server, http):
    fuzz(http, server[1])


def test_fuzzed_requests_through_the_proxy_never_get_a_5xx(proxied):
    """The same in proxy mode, where what is not steering is passed on to the upstream."""
    fuzz(*proxied)
