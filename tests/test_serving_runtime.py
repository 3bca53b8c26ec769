"""`steerable serve` under load and misuse: stop strings that span tokens, a full queue for
streamed and non-streamed requests, clients that leave, the usage chunk, framework errors in
OpenAI's body, the steering header read by a second client library, steering work on its own
executor, slow clients and the `serve` command's refusals (tiny models on loopback)."""

import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from steerable.decoding import Job, RowStreamer, run_batch
from steerable.serving.api import ServedModel, create_app
from steerable.serving.local import BackgroundServer as Server

QUESTION = [{"role": "user", "content": "Tell me about cats."}]


@pytest.fixture(scope="module")
def tiny():
    return ServedModel.load("tiny", max_batch=4, max_queue=16)


@pytest.fixture(scope="module")
def server(tiny_ric, tiny):
    _, ric = tiny_ric
    models = [ServedModel.load(str(ric), max_batch=8, max_queue=64), tiny]
    running = Server(create_app(models, max_tokens_limit=64))
    yield running, models
    running.stop()


def client_of(running) -> openai.OpenAI:
    return openai.OpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0)


def wait_for(condition, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


# --- stop strings ---------------------------------------------------------------------------
def streamed(tokenizer, text: str, stop: list[str], max_tokens: int = 50) -> tuple[Job, list[str]]:
    """`text`'s tokens put one at a time through a RowStreamer: the job and the pieces it emitted."""
    pieces: list[str] = []
    job = Job(text="", max_tokens=max_tokens, stop=stop, on_text=pieces.append)
    streamer = RowStreamer(tokenizer, set())
    for token in tokenizer(text, add_special_tokens=False).input_ids:
        streamer.put([job], [token])
        if job.finish_reason is not None:
            break
    streamer.end(job)
    return job, pieces


@pytest.mark.parametrize(
    ("text", "stop", "kept"),
    [
        ("Hello world.\n\nNext", "\n\n", "Hello world."),  # '\n' '\n': two tokens
        ("Sure!\nUser: hi", "\nUser:", "Sure!"),  # '\n' 'User' ':': three tokens
        ("Sure!\nUser: hi", "xyz", "Sure!\nUser: hi"),  # no stop: everything, held-back text too
    ],
)
def test_a_stop_string_spanning_tokens_is_cut_whole(tiny, text, stop, kept):
    job, pieces = streamed(tiny.tokenizer, text, [stop, "a much longer stop string"])
    assert job.output == kept and "".join(pieces) == kept
    assert job.finish_reason == "stop"


@pytest.mark.parametrize(
    ("text", "stop", "kept"),
    [
        ("Hey\nUser said: hi", "\nUser said:", "Hey"),
        ("\nUser: hi", "\nUser:", ""),
        ("Hi</answer>", "</answer>", "Hi"),
    ],
)
def test_a_stop_that_starts_before_the_held_back_width_is_cut_whole(tiny, text, stop, kept):
    """An answer still shorter than the held-back width hands on nothing yet."""
    job, pieces = streamed(tiny.tokenizer, text, [stop])
    assert (job.output, "".join(pieces), job.finish_reason) == (kept, kept, "stop")


def test_the_last_allowed_token_completing_a_stop_is_a_stop(tiny):
    """'Sure' '!' '\\n' 'User' ':' with max_tokens 5: the fifth token completes the stop."""
    job, pieces = streamed(tiny.tokenizer, "Sure!\nUser: hi", ["\nUser:"], max_tokens=5)
    assert (job.output, "".join(pieces), job.finish_reason) == ("Sure!", "Sure!", "stop")


def test_a_served_stop_spanning_two_tokens_is_cut_streamed_and_not(server, tiny):
    """The greedy answer's tokens are known; a stop made of the end of one token and the start
    of the next is cut whole, with finish reason stop, streamed and not."""
    running, _ = server
    job = Job(text=tiny.render(QUESTION), max_tokens=12, temperature=0)
    run_batch(tiny.model, tiny.tokenizer, [job])
    texts = [
        tiny.tokenizer.decode(job.tokens[:i], skip_special_tokens=True) for i in range(len(job.tokens) + 1)
    ]
    for i in range(1, len(texts) - 1):
        before, after = texts[i], texts[i + 1]
        if len(before) > len(texts[i - 1]) and len(after) > len(before):
            stop = before[-1] + after[len(before)]  # token i's last character, token i + 1's first
            if stop not in before:
                break
    else:
        pytest.fail(f"no two tokens to span in {texts[-1]!r}")
    want = after[: after.find(stop)]
    client = client_of(running)
    settings = {"model": "tiny", "messages": QUESTION, "max_tokens": 12, "temperature": 0, "stop": [stop]}
    whole = client.chat.completions.create(**settings)
    assert (whole.choices[0].message.content, whole.choices[0].finish_reason) == (want, "stop")
    chunks = list(client.chat.completions.create(**settings, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == want
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["stop"]


# --- a full queue, clients that leave -------------------------------------------------------
class Blocked:
    """The engine's worker held inside a running row (its first text piece waits on `release`),
    and `waiting` more jobs queued behind it: the queue is as full as the test wants."""

    def __init__(self, model: ServedModel, waiting: int = 0):
        self.model, self.started, self.release = model, threading.Event(), threading.Event()
        self.row = Job(text=model.render(QUESTION), max_tokens=8, temperature=0, on_text=self.hold)
        model.engine.submit([self.row])
        assert self.started.wait(60), "the worker did not start the blocking row"
        self.queued = [Job(text=model.render(QUESTION), max_tokens=2) for _ in range(waiting)]
        if self.queued:
            model.engine.submit(self.queued)

    def hold(self, _text: str) -> None:
        self.started.set()
        self.release.wait(60)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.release.set()
        for job in [self.row, *self.queued]:
            assert job.done.wait(60)


def test_a_flood_is_refused_with_503_and_retry_after_streamed_or_not():
    model = ServedModel.load("tiny", max_batch=1, max_queue=1)
    running = Server(create_app([model]))
    try:
        url = running.url + "/v1/chat/completions"
        with Blocked(model, waiting=1):

            def one(i):
                body = {"model": "tiny", "messages": QUESTION, "max_tokens": 4, "stream": i % 2 == 0}
                return i, httpx.post(url, json=body, timeout=60)

            with ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(one, range(16)))
            for i, response in answers:
                assert response.status_code == 503, (i, response.status_code, response.text)
                assert response.headers["retry-after"] == "1"
                assert response.json()["error"]["code"] == "queue_full"
            with pytest.raises(openai.InternalServerError):  # the openai client sees the refusal
                list(client_of(running).chat.completions.create(model="tiny", messages=QUESTION, stream=True))
        answer = client_of(running).chat.completions.create(model="tiny", messages=QUESTION, max_tokens=3)
        assert answer.choices[0].finish_reason in ("stop", "length")  # served again once the queue drains
    finally:
        running.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_while_its_request_waits_frees_its_rows(stream):
    """Its jobs still wait in the queue (no text yet) when the client hangs up, streamed or not:
    they are cancelled and never decode."""
    model = ServedModel.load("tiny", max_batch=1, max_queue=4)
    engine = model.engine
    running = Server(create_app([model]))
    try:
        with Blocked(model):
            body = {"model": "tiny", "messages": QUESTION, "max_tokens": 40, "n": 2, "stream": stream}
            content = json.dumps(body).encode()
            head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            sock = socket.create_connection(("127.0.0.1", running.port))
            sock.sendall(head.encode() + b"Content-Length: %d\r\n\r\n" % len(content) + content)
            wait_for(lambda: engine.jobs.qsize() == 2, "the request's jobs were not queued")
            waiting = list(engine.jobs.queue)
            sock.close()  # nothing read: the client goes away while its request waits
            wait_for(lambda: all(j.cancelled.is_set() for j in waiting), "the left request was not cancelled")
        assert all(j.done.wait(60) for j in waiting)
        assert [j.finish_reason for j in waiting] == ["cancelled", "cancelled"]
        assert [j.completion_tokens for j in waiting] == [0, 0]
    finally:
        running.stop()


# --- the stream's chunks, framework errors, the models -------------------------------------
def test_the_openai_documented_stream_loop_runs_and_usage_comes_only_when_asked(server):
    running, _ = server
    client = client_of(running)
    stream = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=6, stream=True)
    text = ""
    for chunk in stream:  # OpenAI's own documented loop, no special cases
        text += chunk.choices[0].delta.content or ""
    assert text
    chunks = list(
        client.chat.completions.create(
            model="tiny", messages=QUESTION, max_tokens=6, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert all(c.choices for c in chunks[:-1])


def test_a_model_is_retrieved_by_id_and_framework_errors_use_openai_body(server):
    running, models = server
    client = client_of(running)
    card = client.models.retrieve(models[0].id)
    assert card.id == models[0].id and card.model_extra["objectives"] == ["brief", "positive"]
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("no-such-model")
    assert caught.value.body["code"] == "model_not_found"
    unknown = httpx.get(running.url + "/v1/nothing-here")
    wrong_method = httpx.get(running.url + "/v1/chat/completions")
    for response, status in ((unknown, 404), (wrong_method, 405)):
        assert response.status_code == status
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"]
    with socket.create_connection(("127.0.0.1", running.port)) as sock:  # not HTTP at all
        sock.sendall(b"GARBAGE \x00\x01 nonsense\r\n\r\n")
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert (
        head.startswith(b"HTTP/1.1 400") and json.loads(payload)["error"]["type"] == "invalid_request_error"
    )


def test_a_typed_parameter_refused_by_fastapi_uses_openai_body(tiny):
    app = create_app([tiny])

    @app.get("/v1/typed/{number}")
    async def typed(number: int):
        return {"number": number}

    running = Server(app)
    try:
        assert httpx.get(running.url + "/v1/typed/3").json() == {"number": 3}
        refused = httpx.get(running.url + "/v1/typed/three")
        error = refused.json()["error"]
        assert refused.status_code == 400 and error["param"] == "number" and "integer" in error["message"]
    finally:
        running.stop()


def test_a_500_answers_a_generic_message_and_logs_the_cause(tiny, caplog):
    model = ServedModel.load("tiny")

    def broken(*_):
        raise RuntimeError("secret detail from /srv/internal")

    model.steer = broken
    running = Server(create_app([model]))
    uvicorn_log = logging.getLogger("uvicorn.error")  # uvicorn's loggers do not propagate to the root
    uvicorn_log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.ERROR):
            response = httpx.post(
                running.url + "/v1/chat/completions", json={"model": "tiny", "messages": QUESTION}
            )
        assert response.status_code == 500 and response.json()["error"]["type"] == "server_error"
        assert "secret" not in response.text and "RuntimeError" not in response.text

        def logged() -> bool:  # uvicorn logs it once the 500 is sent
            causes = [r.exc_info[1] for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
            return any(isinstance(c, RuntimeError) and "secret detail" in str(c) for c in causes)

        wait_for(logged, "the cause was not logged at ERROR")
        assert httpx.get(running.url + "/health").status_code == 200
    finally:
        uvicorn_log.removeHandler(caplog.handler)
        running.stop()


def test_a_client_that_abandons_its_upload_is_not_a_traceback(server):
    """One line at INFO from the server's own log, nothing from uvicorn's."""
    running, _ = server
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "steerable.serving.api")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", running.port)) as sock:
                sock.sendall(
                    b'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{"model'
                )
        wait_for(
            lambda: sum("went away" in r.getMessage() for r in records) == 3,
            "the three uploads were not seen",
        )
        assert not [r for r in records if r.levelno >= logging.WARNING]
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


# --- the applied steering as a header -------------------------------------------------------
def test_the_applied_steering_is_a_header_that_langchain_reads(server):
    from langchain_openai import ChatOpenAI

    running, models = server
    policy = models[0].policy
    llm = ChatOpenAI(
        base_url=running.url + "/v1",
        api_key="unused",
        model=models[0].id,
        max_tokens=6,
        temperature=0,
        max_retries=0,
        include_response_headers=True,
        extra_body={"steering": {"weights": {"brief": 1.0}}},
    )
    answer = llm.invoke("Tell me about cats.")
    applied = json.loads(answer.response_metadata["headers"]["x-steering"])
    assert applied["targets"] == pytest.approx(policy.targets_for([1, 0]))
    assert applied["weights"] == {"brief": 1.0, "positive": 0.0}
    first = next(iter(llm.stream("Tell me about dogs.")))
    assert json.loads(first.response_metadata["headers"]["x-steering"]) == applied
    raw = client_of(running).chat.completions.with_raw_response.create(
        model=models[0].id, messages=QUESTION, max_tokens=4, extra_body={"steering": {"weights": [0, 1]}}
    )
    assert json.loads(raw.headers["x-steering"]) == raw.parse().model_extra["steering"]


# --- steering work on its own executor ------------------------------------------------------
def hold_steering(model: ServedModel) -> threading.Event:
    """Make `model`'s steering wait until the returned event is set."""
    release, steer = threading.Event(), model.steer

    def held(messages, steering):
        release.wait(60)
        return steer(messages, steering)

    model.steer = held
    return release


def test_slow_steering_of_one_model_does_not_block_another(tiny):
    slow = ServedModel.load("tiny")
    slow.id = "slow"
    release = hold_steering(slow)
    running = Server(create_app([slow, tiny]))
    url = running.url + "/v1/chat/completions"
    try:
        with ThreadPoolExecutor(12) as pool:
            body = {"model": "slow", "messages": QUESTION, "max_tokens": 2}
            waiting = [pool.submit(httpx.post, url, json=body, timeout=120) for _ in range(12)]
            try:
                other = httpx.post(
                    url, json={"model": "tiny", "messages": QUESTION, "max_tokens": 2}, timeout=30
                )
                assert other.status_code == 200, other.text
            finally:
                release.set()
            assert {f.result().status_code for f in waiting} <= {200, 503}
    finally:
        running.stop()


def test_a_flood_waiting_for_a_models_steering_is_refused_past_its_queue():
    """Steering and scoring wait on the model's own thread; past the model's max_queue waiting
    there, a request is refused with 503 and Retry-After rather than queued without limit."""
    model = ServedModel.load("tiny", max_queue=2)
    release = hold_steering(model)
    running = Server(create_app([model]))
    url = running.url + "/v1/chat/completions"
    try:
        with ThreadPoolExecutor(6) as pool:
            body = {"model": "tiny", "messages": QUESTION, "max_tokens": 2}
            waiting = [pool.submit(httpx.post, url, json=body, timeout=120) for _ in range(6)]
            try:
                wait_for(lambda: sum(f.done() for f in waiting) >= 4, "the flood was not refused")
            finally:
                release.set()
            answers = [f.result() for f in waiting]
        busy = [a for a in answers if a.status_code == 503]
        assert len(busy) == 4 and all(a.headers["retry-after"] == "1" for a in busy)
        assert {a.json()["error"]["code"] for a in busy} == {"queue_full"}
        assert sorted(a.status_code for a in answers) == [200, 200, 503, 503, 503, 503]
    finally:
        running.stop()


def test_the_prompt_is_rendered_on_the_models_thread_not_the_event_loop(tiny):
    """Rendering the chat template is CPU work: it runs on the model's own thread, as steering does."""
    model = ServedModel.load("tiny")
    threads: list[str] = []
    render = model.render

    def recorded(messages):
        threads.append(threading.current_thread().name)
        return render(messages)

    model.render = recorded
    running = Server(create_app([model]))
    try:
        body = {"model": "tiny", "messages": QUESTION, "max_tokens": 2}
        assert httpx.post(running.url + "/v1/chat/completions", json=body, timeout=60).status_code == 200
        assert threads and all(name.startswith("steerable-steering") for name in threads), threads
    finally:
        running.stop()


def test_ignored_fields_are_logged_at_debug_not_warning(server, caplog):
    """The openai client and LangChain send fields we ignore with every request: no warning each time."""
    running, _ = server
    body = {"model": "tiny", "messages": QUESTION, "max_tokens": 2, "user": "u1", "frequency_penalty": 0}
    with caplog.at_level(logging.DEBUG, logger="steerable.serving.api"):
        assert httpx.post(running.url + "/v1/chat/completions", json=body, timeout=60).status_code == 200
    ignored = [r for r in caplog.records if "ignored" in r.getMessage()]
    assert [r.levelno for r in ignored] == [logging.DEBUG]
    assert "frequency_penalty" in ignored[0].getMessage() and "user" in ignored[0].getMessage()


# --- slow clients and the serve command -----------------------------------------------------
def closed_by_server(sock: socket.socket, seconds: float = 30) -> bool:
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
        return True
    except TimeoutError:
        return False


def test_slow_clients_are_closed_after_the_read_timeout(tiny):
    running = Server(create_app([tiny]), read_timeout=1)
    try:
        silent = socket.create_connection(("127.0.0.1", running.port))
        partial = socket.create_connection(("127.0.0.1", running.port))
        partial.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # the rest never comes
        slow_body = socket.create_connection(("127.0.0.1", running.port))
        slow_body.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        for sock in (silent, partial, slow_body):
            with sock:
                assert closed_by_server(sock)
        assert httpx.get(running.url + "/health").status_code == 200
    finally:
        running.stop()


def test_a_pipelined_request_whose_body_never_comes_is_closed_after_the_read_timeout(tiny):
    """A whole request, then the header of a second that promises a body it never sends: the
    second's body is read after the first's answer, and must arrive within the read timeout too."""
    running = Server(create_app([tiny]), read_timeout=1)
    try:
        with socket.create_connection(("127.0.0.1", running.port)) as sock:
            sock.sendall(
                b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
            )
            assert closed_by_server(sock, seconds=15)
    finally:
        running.stop()


def test_connections_over_the_limit_get_503_with_retry_after(tiny):
    running = Server(create_app([tiny]), limit_concurrency=2)
    try:
        idle = [socket.create_connection(("127.0.0.1", running.port)) for _ in range(2)]
        wait_for(lambda: len(running.server.server_state.connections) == 2, "the connections were not made")
        busy = httpx.get(running.url + "/v1/models")
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert busy.json()["error"]["type"] == "server_error"
        for sock in idle:
            sock.close()
        wait_for(lambda: httpx.get(running.url + "/health").status_code == 200, "not served again")
    finally:
        running.stop()


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--port", "70000"], "--port"),
        (["--host", "no-such-host.invalid"], "--host"),
        (["--upstream", "not a url"], "--upstream"),
        (["--upstream", "ftp://example.org/v1"], "--upstream"),
        (["--read-timeout", "0"], "--read-timeout"),
        (["--limit-concurrency", "0"], "--limit-concurrency"),
    ],
)
def test_serve_refuses_bad_network_settings_at_start(options, named):
    from typer.testing import CliRunner

    from steerable.cli import app

    result = CliRunner().invoke(app, ["serve", "tiny", *options])
    assert result.exit_code == 2 and named in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_serve_refuses_a_port_in_use():
    from typer.testing import CliRunner

    from steerable.cli import app

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "tiny", "--port", str(port)])
    assert result.exit_code == 2 and f"port {port}" in result.output and "in use" in result.output


def test_steering_examples_are_embedded_without_a_progress_bar(capfd):
    """A request's NP-DPO examples go through the pair encoder with no bar in the server's log
    (the encoder's own loading, once, is quiet under the command line's `quiet_libraries`)."""
    from steerable.fewshot.policy import embed_examples
    from steerable.scorers.builtin import minilm_encoder

    minilm_encoder("cpu")  # loaded once, as the server's first request would
    capfd.readouterr()
    example = {"prompt": "Say hi.", "chosen": "Hello there!", "rejected": "Go away."}
    chosen, rejected = embed_examples([example, {**example, "chosen": "Hi!"}], "minilm")
    assert chosen.shape == rejected.shape and chosen.shape[0] == 2
    assert capfd.readouterr().err == ""


def test_each_row_is_given_its_own_condition_as_rows_leave(tiny):
    """What a method conditions its model on besides the prompt (any object, not only NP-DPO's
    z) reaches every forward pass, one per row in row order, also after a row has left; a job
    with a condition and no conditioner fails rather than being answered unconditioned."""
    import contextlib

    seen = []

    @contextlib.contextmanager
    def conditioned(conditions):
        seen.append(list(conditions))
        yield

    jobs = [
        Job(text=tiny.render(QUESTION), max_tokens=n, temperature=1.0, seed=0, condition=c)
        for n, c in ((1, "short"), (6, "long"))
    ]
    run_batch(tiny.model, tiny.tokenizer, jobs, conditioned)
    assert seen[0] == ["short", "long"]
    assert len(seen) == jobs[1].completion_tokens + (jobs[1].finish_reason == "stop")
    assert all(step == ["long"] for step in seen[1:])
    with pytest.raises(ValueError, match="no conditioner"):
        run_batch(tiny.model, tiny.tokenizer, [Job(text="hi", max_tokens=1, condition="lost")])


def test_a_served_method_conditions_its_rows_through_its_steering(tiny_ric, monkeypatch):
    """The server asks the method's `Steering` for its conditioner and hands each row the
    condition `request` returned: no method's attributes are named by the server."""
    import contextlib

    from fastapi.testclient import TestClient

    from steerable.methods.ric import steering

    seen = []

    @contextlib.contextmanager
    def conditioned(conditions):
        seen.append(list(conditions))
        yield

    request = steering.request
    monkeypatch.setattr(steering, "conditioner", lambda policy: conditioned)
    monkeypatch.setattr(
        steering, "request", lambda policy, s: (*request(policy, s)[:1], "mine", request(policy, s)[2])
    )
    _, ric = tiny_ric
    served = ServedModel.load(str(ric), max_batch=4, max_queue=8)
    assert served.engine.prefixes is None  # a condition may change every layer: no shared prefix
    body = {"model": served.id, "messages": QUESTION, "max_tokens": 2, "steering": {"weights": [1, 0]}}
    answer = TestClient(create_app([served], max_tokens_limit=8)).post("/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text
    assert seen and all(step == ["mine"] for step in seen)
