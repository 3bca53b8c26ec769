"""`steerable serve` through the real `openai` client: completions, streaming, steering and its
echo, errors, and batching without cross-talk (tiny models on loopback)."""

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from steerable.serving.api import ServedModel, create_app
from steerable.serving.local import BackgroundServer as Server
from steerable.serving.local import free_port


@pytest.fixture(scope="module")
def server(tiny_ric):
    _, ric = tiny_ric
    models = [ServedModel.load(str(ric), max_batch=8, max_queue=64), ServedModel.load("tiny")]
    running = Server(create_app(models, max_body_bytes=4096, max_tokens_limit=64))
    yield running, models
    running.stop()


def test_models_and_health_describe_what_is_served(server, client):
    running, models = server
    listed = {m.id: m.model_extra for m in client.models.list().data}
    ric = listed[models[0].id]
    assert ric["method"] == "ric" and ric["objectives"] == ["brief", "positive"]
    assert ric["steering"] == ["weights", "mapping", "targets"]
    assert listed[models[1].id]["steering"] == []
    assert httpx.get(running.url + "/health").json()["status"] == "ok"


def test_a_completion_echoes_the_steering_it_applied(server, client, ask):
    _, models = server
    policy = models[0].policy
    plain = ask(models[0].id)
    assert isinstance(plain.choices[0].message.content, str) and plain.usage.completion_tokens > 0
    assert plain.choices[0].finish_reason in ("stop", "length")
    equal = plain.model_extra["steering"]["targets"]
    assert equal == pytest.approx(policy.targets_for([1, 1]))
    brief = ask(models[0].id, {"weights": {"brief": 1.0}})
    steering = brief.model_extra["steering"]
    assert steering["targets"] == pytest.approx(policy.targets_for([1, 0]))
    assert steering["weights"] == {"brief": 1.0, "positive": 0.0} and steering["mapping"] == "linf"
    explicit = ask(models[0].id, {"targets": {"brief": 0.5, "positive": -0.5}})
    assert explicit.model_extra["steering"]["targets"] == {"brief": 0.5, "positive": -0.5}


def test_the_answer_is_the_one_the_python_api_gives(server, client, ask):
    from steerable.generation import SamplingConfig

    _, models = server
    policy = models[0].policy
    served = ask(models[0].id, {"weights": [0.3, 0.7]}).choices[0].message.content
    local = policy.generate(
        ["Tell me about cats."],
        preference=[0.3, 0.7],
        sampling=SamplingConfig(max_new_tokens=8, temperature=0),
    )[0]
    assert served.strip() == local


def test_streamed_text_equals_the_non_streamed_text_under_a_seed(server, client, ask):
    _, models = server
    whole = ask(models[0].id, {"weights": [1, 0]}, temperature=0.9, seed=7, max_tokens=12)
    chunks = list(ask(models[0].id, {"weights": [1, 0]}, temperature=0.9, seed=7, max_tokens=12, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].model_extra["steering"]["targets"] == pytest.approx(
        whole.model_extra["steering"]["targets"]
    )
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]


def test_batched_answers_equal_solo_answers(server, client, ask):
    _, models = server
    requests = [({"weights": [w, 1 - w]}, None) for w in (0.0, 0.25, 0.5, 0.75, 1.0)]
    requests += [({"weights": [1, 0]}, 3), ({"weights": [0, 1]}, 11)]  # sampled, with their own seeds

    def one(item):
        steering, seed = item
        kwargs = {"temperature": 0.9, "seed": seed} if seed is not None else {}
        return ask(models[0].id, steering, **kwargs).choices[0].message.content

    solo = [one(item) for item in requests]
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(one, requests))
    assert together == solo
    assert models[0].engine.largest_batch > 1  # they did share batches


def test_n_choices_and_stop_strings(server, client, ask):
    _, models = server
    many = ask(models[0].id, n=3, temperature=0.9, seed=1, max_tokens=10)
    assert [c.index for c in many.choices] == [0, 1, 2]
    first = many.choices[0].message.content
    if len(first) > 2:
        cut = first[1:3]
        stopped = ask(models[0].id, n=1, temperature=0.9, seed=1, max_tokens=10, stop=[cut])
        assert stopped.choices[0].message.content == first[: first.find(cut)]
        assert stopped.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("steering", "param", "message"),
    [
        ({"weights": {"funny": 1}}, "steering.weights", "unknown objective"),
        ({"weights": [-1, 2]}, "steering.weights", "negative"),
        ({"weights": [0, 0]}, "steering.weights", "all zero"),
        ({"weights": [1, 0, 0]}, "steering.weights", "3 weight(s)"),
        ({"levels": {"brief": 3}}, "steering.levels", "does not apply"),
        ({"weights": [1, 0], "mapping": "cubic"}, "steering.weights", "mapping 'cubic' unknown"),
        ({"targets": {"brief": 1}}, "steering.targets", "missing: ['positive']"),
        ({"weights": "lots"}, "steering.weights", "must be an object"),
    ],
)
def test_bad_steering_is_a_bad_request_naming_the_field(server, client, steering, param, message, ask):
    _, models = server
    with pytest.raises(openai.BadRequestError) as caught:
        ask(models[0].id, steering)
    error = caught.value.body
    assert (
        error["param"] == param and message in error["message"] and error["type"] == "invalid_request_error"
    )


def test_bad_requests_get_the_openai_error_body(server, client, ask):
    running, models = server
    with pytest.raises(openai.NotFoundError):
        ask("no-such-model")
    with pytest.raises(openai.BadRequestError, match="max_tokens must be in"):
        ask(models[0].id, max_tokens=10_000)
    with pytest.raises(openai.BadRequestError, match="temperature must be"):
        ask(models[0].id, temperature="hot")
    with pytest.raises(openai.BadRequestError, match="takes no steering"):
        ask(models[1].id, {"weights": [1, 0]})
    url = running.url + "/v1/chat/completions"
    malformed = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert malformed.status_code == 422 and "not valid JSON" in malformed.json()["error"]["message"]
    big = httpx.post(url, content=json.dumps({"model": models[0].id, "pad": "x" * 5000}))
    assert big.status_code == 413
    nan = httpx.post(
        url,
        content=b'{"model": "%s", "messages": [{"role": "user", "content": "hi"}], '
        b'"steering": {"weights": [NaN, 1]}}' % models[0].id.encode(),
    )
    assert nan.status_code == 400 and nan.json()["error"]["param"] == "steering.weights[0]"
    assert httpx.get(running.url + "/health").status_code == 200  # still up


def test_an_api_key_is_checked_on_every_request():
    running = Server(create_app([ServedModel.load("tiny")], api_key="secret"))
    try:
        base = running.url + "/v1"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=base, api_key="wrong", max_retries=0).models.list()
        ok = openai.OpenAI(base_url=base, api_key="secret", max_retries=0)
        assert ok.models.list().data[0].id == "tiny"
    finally:
        running.stop()


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_64_concurrent_clients_with_mixed_steering_are_all_answered(server):
    running, models = server
    policy = models[0].policy
    url = running.url + "/v1/chat/completions"
    weights = [[w / 7, 1 - w / 7] for w in range(8)]
    before = rss_mb()

    def one(i):
        body = {
            "model": models[0].id,
            "messages": [{"role": "user", "content": f"Question number {i}?"}],
            "max_tokens": 6,
            "temperature": 0.8,
            "seed": i,
            "stream": i % 4 == 0,
            "steering": {"weights": weights[i % 8]},
        }
        response = httpx.post(url, json=body, timeout=120)
        return i, response

    with ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(one, range(64)))
    for i, response in answers:
        assert response.status_code == 200, response.text
        if i % 4 == 0:
            assert response.text.rstrip().endswith("data: [DONE]")
        else:
            targets = response.json()["steering"]["targets"]
            assert targets == pytest.approx(policy.targets_for(weights[i % 8]))
    assert models[0].engine.largest_batch > 1
    assert rss_mb() - before < 500  # memory stays bounded


def test_a_full_queue_answers_503_with_retry_after(tiny_ric):
    _, ric = tiny_ric
    running = Server(create_app([ServedModel.load(str(ric), max_batch=1, max_queue=1)]))
    try:
        body = {"model": "model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 48}

        def one(_):
            return httpx.post(running.url + "/v1/chat/completions", json=body, timeout=120)

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(one, range(8)))
        codes = sorted(r.status_code for r in responses)
        assert 200 in codes and 503 in codes and set(codes) <= {200, 503}
        busy = next(r for r in responses if r.status_code == 503)
        assert busy.headers["retry-after"] == "1" and busy.json()["error"]["code"] == "queue_full"
    finally:
        running.stop()


def test_serve_refuses_bad_settings_and_unknown_models(tmp_path):
    from typer.testing import CliRunner

    from steerable.cli import app

    zero = CliRunner().invoke(app, ["serve", "tiny", "--max-batch", "0"])
    assert zero.exit_code == 2 and "--max-batch" in zero.output
    missing = CliRunner().invoke(app, ["serve", str(tmp_path / "nothing-here")])
    assert missing.exit_code == 2 and "could not be loaded" in missing.output


def test_proxy_mode_answers_through_a_transformers_serve_upstream(tiny_ric, tmp_path, ask):
    import subprocess
    import sys

    from typer.testing import CliRunner

    from steerable.cli import app

    _, ric = tiny_ric
    merged = tmp_path / "merged"
    exported = CliRunner().invoke(app, ["export", str(ric), str(merged)])
    assert exported.exit_code == 0, exported.output
    assert (merged / "config.json").is_file() and not (merged / "adapter_config.json").exists()
    again = CliRunner().invoke(app, ["export", str(ric), str(merged)])
    assert again.exit_code == 2 and "not empty" in again.output
    port = free_port()
    command = [str(Path(sys.executable).parent / "transformers"), "serve", str(merged)]
    upstream = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert upstream.poll() is None, upstream.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "transformers serve did not start"
            time.sleep(0.5)
        proxy = ServedModel.proxy(str(ric), f"http://127.0.0.1:{port}/v1", upstream_model=str(merged))
        running = Server(create_app([proxy]))
        try:
            client = openai.OpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0)
            reply = ask("model", {"weights": [1, 0]}, via=client, max_tokens=6)
            assert isinstance(reply.choices[0].message.content, str)
            assert reply.model_extra["steering"]["targets"] == pytest.approx(proxy.policy.targets_for([1, 0]))
            assert reply.model == "model"
            chunks = list(ask("model", {"weights": [0, 1]}, via=client, max_tokens=6, stream=True))
            assert chunks and chunks[0].model_extra["steering"]["targets"] == pytest.approx(
                proxy.policy.targets_for([0, 1])
            )
            with pytest.raises(openai.BadRequestError):
                ask("model", {"weights": [-1, 1]}, via=client)
        finally:
            running.stop()
    finally:
        upstream.terminate()
        upstream.wait(timeout=30)


def test_a_client_that_leaves_mid_stream_frees_its_row(server, ask):
    running, models = server
    engine = models[0].engine
    before = engine.finish_reasons["cancelled"]
    body = {
        "model": models[0].id,
        "messages": [{"role": "user", "content": "Write a long story."}],
        "max_tokens": 64,
        "temperature": 0.9,
        "seed": 5,
        "stream": True,
    }
    with httpx.stream("POST", running.url + "/v1/chat/completions", json=body, timeout=60) as response:
        next(response.iter_lines())  # the first chunk, then hang up
    deadline = time.time() + 60
    while engine.finish_reasons["cancelled"] == before:
        assert time.time() < deadline, "the abandoned row was not stopped"
        time.sleep(0.1)
    still = openai.OpenAI(base_url=running.url + "/v1", api_key="x")
    assert ask(models[0].id, via=still).choices  # still serving


@pytest.mark.parametrize("top_p", [1.0, 0.8, 0.999])
def test_each_row_draws_from_its_own_nucleus(top_p):
    """The batched inverse-CDF draw samples each row's top-p distribution: frequencies over many
    rows match it, greedy rows take the argmax, and a flat row whose nucleus is wider than the
    first 64 candidates is still cut where it should be."""
    import torch

    from steerable.decoding import draw_tokens

    rows = 40_000
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0] + [-30.0] * 195)
    flat = torch.zeros(200)
    scores = torch.stack([logits, flat]).repeat(rows // 2, 1)
    temperature = torch.full((rows,), 0.7)
    temperature[:10] = 0.0  # greedy rows
    uniform = torch.rand(rows, generator=torch.Generator().manual_seed(0))
    tokens = draw_tokens(scores, temperature, torch.full((rows,), top_p), uniform)
    assert tokens[:10:2].tolist() == [0] * 5  # argmax of the peaked rows

    def expected(row_logits):
        probs = torch.softmax(row_logits / 0.7, -1)
        ordered, order = probs.sort(descending=True)
        kept = torch.zeros_like(probs)
        keep = (ordered.cumsum(0) - ordered) < top_p
        kept[order[keep]] = ordered[keep]
        return kept / kept.sum()

    peaked, uniform = tokens[10::2], tokens[11::2]
    got = torch.bincount(peaked, minlength=200).float() / len(peaked)
    assert torch.allclose(got, expected(logits), atol=0.01)
    got = torch.bincount(uniform, minlength=200).float() / len(uniform)
    want = expected(flat)
    assert int((got > 0).sum()) == int((want > 0).sum())  # the nucleus's width, exactly
    assert torch.allclose(got, want, atol=0.01)


def test_a_tiny_temperature_is_the_argmax_and_a_broken_row_does_not_crash_the_batch():
    import torch

    from steerable.decoding import draw_tokens

    scores = torch.tensor([[5.0, 1.0, 0.0, -1.0], [0.0, 3.0, 1.0, 2.0], [float("nan")] * 4])
    for top_p in (1.0, 0.9):
        tokens = draw_tokens(
            scores, torch.tensor([1e-40, 1e-30, 0.7]), torch.full((3,), top_p), torch.tensor([0.99, 0.5, 0.5])
        )
        assert tokens[:2].tolist() == [0, 1]
        assert 0 <= int(tokens[2]) < 4


def test_a_cached_prompt_prefix_gives_the_answers_a_full_prefill_gives(server):
    """The engine keeps the template's shared prefix (learnt at load) and every batch of distinct
    prompts teaches it theirs; a row laid out as [prefix | padding | rest] with the prefix's keys
    and values passed in draws the same tokens, sampled with its own seed, as a full prefill."""
    from steerable.decoding import Job, common_prefix, run_batch

    _, models = server
    served = models[0]
    prefixes = served.engine.prefixes
    template = [served.render(served.steer([{"role": "user", "content": q}], None)[0]) for q in ("a", "b")]
    rows = served.tokenizer(template, add_special_tokens=False)["input_ids"]
    assert tuple(rows[0][: common_prefix(rows)]) in prefixes.kept  # learnt when the model loaded

    questions = ["Tell me about cats.", "Why is the sky blue, and what is light made of?", "Hi", "Hi"]
    texts = [served.render(served.steer([{"role": "user", "content": q}], None)[0]) for q in questions]

    def answers(cache, texts):
        jobs = [Job(text=t, max_tokens=10, temperature=1.0, seed=i) for i, t in enumerate(texts)]
        run_batch(served.model, served.tokenizer, jobs, None, cache)
        return [(j.output, j.prompt_tokens) for j in jobs]

    hits = prefixes.hits
    full = answers(None, texts)
    assert answers(prefixes, texts) == full
    assert prefixes.hits == hits + 1
    assert len({a for a, _ in full}) > 1  # the answers differ: the draws are a real check
    assert [answers(prefixes, [t])[0][0] for t in texts[:1]] == [full[0][0]]  # solo, prefix from the cache
    assert prefixes.hits == hits + 2
    assert len(prefixes.kept) <= prefixes.size


def test_a_finished_row_leaves_the_batch_and_the_others_draw_as_they_would_alone(server):
    """Each step runs only the rows still going: a row at its max_tokens leaves, and the rows
    left (their cache, mask, positions and generators cut to match) draw what they draw alone."""
    from steerable.decoding import Job, run_batch

    _, models = server
    served = models[0]
    texts = [served.render([{"role": "user", "content": q}]) for q in ("Tell me about cats.", "Hi", "Why?")]
    sizes = []
    hook = served.model.register_forward_hook(lambda module, args, kwargs, out: sizes.append(
        kwargs["input_ids"].shape[0]), with_kwargs=True)  # fmt: skip

    def answers(texts, lengths, seeds):
        jobs = [
            Job(text=t, max_tokens=n, temperature=1.0, seed=s)
            for t, n, s in zip(texts, lengths, seeds, strict=True)
        ]
        run_batch(served.model, served.tokenizer, jobs, None, served.engine.prefixes)
        return [(j.output, j.finish_reason, j.completion_tokens) for j in jobs]

    try:
        together = answers(texts, [2, 9, 5], [7, 8, 9])
        steps = list(sizes)
        alone = [answers([t], [n], [s])[0] for t, n, s in zip(texts, [2, 9, 5], [7, 8, 9], strict=True)]
    finally:
        hook.remove()
    assert [c for _, _, c in together] == [2, 9, 5] and {r for _, r, _ in together} == {"length"}
    assert steps == [3, 3, 2, 2, 2, 1, 1, 1, 1]  # three rows, then two after 2 tokens, then one after 5
    assert [a for a, _, _ in together] == [a for a, _, _ in alone]


def test_a_request_that_arrives_mid_batch_joins_at_the_next_step(server):
    """The worker takes in a job queued while its rows run (their caches merged, the shorter
    padded on the left), and each row still draws what it draws alone."""
    from steerable.decoding import Job, run_batch
    from steerable.serving.engine import BatchEngine

    _, models = server
    served = models[0]
    engine = BatchEngine(served.model, served.tokenizer, max_batch=4, batch_wait=0)
    questions = (
        "Tell me about cats.",
        "Why is the sky blue, what is light made of, and why is the sea blue?",
    )
    texts = [served.render([{"role": "user", "content": q}]) for q in questions]  # the later one longer
    late = Job(text=texts[1], max_tokens=6, temperature=1.0, seed=2)

    def submit_late(_text):  # from the worker, once the first job has drawn 3 tokens
        if len(first.tokens) >= 3 and not late.prompt_tokens and engine.jobs.empty():
            engine.submit([late])

    first = Job(text=texts[0], max_tokens=20, temperature=1.0, seed=1, on_text=submit_late)
    sizes = []
    hook = served.model.register_forward_hook(lambda module, args, kwargs, out: sizes.append(
        (kwargs["input_ids"].shape, kwargs["attention_mask"].shape[1])), with_kwargs=True)  # fmt: skip
    try:
        engine.submit([first])
        assert first.done.wait(60) and late.done.wait(60)
    finally:
        hook.remove()
    assert (first.error, late.error) == (None, None)
    assert engine.largest_batch == 2
    rows = [shape[0] for shape, _ in sizes]
    assert rows[:4] == [1, 1, 1, 1] and 2 in rows  # alone for its first tokens, then joined
    assert rows[-1] == 1 and (first.completion_tokens, late.completion_tokens) == (20, 6)
    assert sizes[-1][1] == first.prompt_tokens + 19  # the padding it took on to join was dropped
    alone = [
        Job(text=t, max_tokens=n, temperature=1.0, seed=s)
        for t, n, s in zip(texts, (20, 6), (1, 2), strict=True)
    ]
    for job in alone:
        run_batch(served.model, served.tokenizer, [job], None, served.engine.prefixes)
    assert [first.output, late.output] == [j.output for j in alone]


def test_a_burst_is_prefilled_in_groups_of_similar_length_and_each_row_draws_as_alone(server):
    """Jobs that start together are prefilled `prefill_rows` at a time, shortest prompts first,
    and joined into one batch; each row still draws what it draws alone."""
    from steerable.decoding import Job, run_batch
    from steerable.serving.engine import BatchEngine

    _, models = server
    served = models[0]
    engine = BatchEngine(
        served.model, served.tokenizer, max_batch=8, batch_wait=0.5, prefix_cache=False, prefill_rows=2
    )
    questions = [
        "Why is the sky blue, and what is light made of?",
        "Hi",
        "Tell me about cats.",
        "Why?",
        "Name a dog.",
    ]
    texts = [served.render([{"role": "user", "content": q}]) for q in questions]
    shapes = []
    hook = served.model.register_forward_hook(lambda module, args, kwargs, out: shapes.append(
        tuple(kwargs["input_ids"].shape)), with_kwargs=True)  # fmt: skip
    jobs = [Job(text=t, max_tokens=4, temperature=1.0, seed=i) for i, t in enumerate(texts)]
    try:
        engine.submit(jobs)
        assert all(j.done.wait(60) for j in jobs)
    finally:
        hook.remove()
    assert [j.error for j in jobs] == [None] * 5 and engine.largest_batch == 5
    prefills = [s for s in shapes if s[1] > 1]
    assert [rows for rows, _ in prefills] == [2, 2, 1]  # three groups, then one batch of 5
    assert [width for _, width in prefills] == sorted(width for _, width in prefills)  # shortest first
    assert shapes[len(shapes) - 3] == (5, 1)  # the five decode together after the join
    alone = [Job(text=t, max_tokens=4, temperature=1.0, seed=i) for i, t in enumerate(texts)]
    for job in alone:
        run_batch(served.model, served.tokenizer, [job], None, served.engine.prefixes)
    assert [j.output for j in jobs] == [j.output for j in alone]
