"""`steerable serve` for image models (RiC on the embedded digits), through the real `openai`
client: POST /v1/images/generations with `steering`, its echo and scores, bad input as 400s
naming the field, requests of different steering sampled in one batch without changing any
row's image, and the playground's two columns of images."""

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from steerable.serving.api import ServedModel, create_app
from steerable.serving.engine import ImageEngine, ImageJob
from steerable.serving.local import BackgroundServer

CAPTION = "a handwritten digit seven"


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    from steerable.methods.ric_image.recipe import RiCImageConfig, train_ric_image

    out = tmp_path_factory.mktemp("ric-image") / "digits"
    config = RiCImageConfig(output_dir=str(out), base_steps=4, steps=4, batch_size=8, copies=1,
                            save_steps=10, sampling_steps=2)  # fmt: skip
    return train_ric_image(config)


@pytest.fixture(scope="module")
def server(image_dir):
    models = [ServedModel.load(str(image_dir), max_batch=16, max_queue=64), ServedModel.load("tiny")]
    running = BackgroundServer(create_app(models))
    yield running, models
    running.stop()


def png_bytes(reply) -> list[bytes]:
    return [base64.b64decode(d.b64_json) for d in reply.data]


def draw(client, model_id, steering=None, extra=None, **kwargs):
    """Images through the openai client; `steering` and `extra` (seed, guidance_scale, ...) go in
    the body beside OpenAI's fields."""
    settings = {"prompt": CAPTION, "n": 1, "size": "16x16", "response_format": "b64_json", **kwargs}
    body = {**({"steering": steering} if steering is not None else {}), **(extra or {})}
    return client.images.generate(model=model_id, extra_body=body or None, **settings)


def test_the_image_model_is_listed_with_its_method_objectives_steering_and_size(server, client):
    _, models = server
    card = {m.id: m.model_extra for m in client.models.list().data}[models[0].id]
    assert card["method"] == "ric-image" and card["modality"] == "image"
    assert card["objectives"] == ["recognizability", "compressibility"]
    assert card["steering"] == ["weights", "mapping", "targets"]
    assert card["size"] == "16x16" and card["num_inference_steps"] == 2 and card["guidance_scale"] == 2.0
    assert {m.id: m.model_extra for m in client.models.list().data}[models[1].id]["modality"] == "text"


def test_images_come_back_as_pngs_of_the_models_size_with_the_steering_echoed_and_scored(server, client):
    _, models = server
    policy = models[0].policy
    reply = client.images.generate(
        model=models[0].id,
        prompt=CAPTION,
        n=2,
        size="16x16",
        response_format="b64_json",
        extra_body={"steering": {"weights": {"recognizability": 1.0}}, "seed": 5},
    )
    pictures = [Image.open(io.BytesIO(raw)) for raw in png_bytes(reply)]
    assert [(p.format, p.size) for p in pictures] == [("PNG", (16, 16))] * 2
    steering = reply.model_extra["steering"]
    assert steering["targets"] == pytest.approx(policy.targets_for([1, 0]))
    assert steering["weights"] == {"recognizability": 1.0, "compressibility": 0.0}
    assert steering["mapping"] == policy.mapping.default
    scores = reply.model_extra["scores"]
    assert scores["objectives"] == policy.names and len(scores["raw"]) == 2 and len(scores["normalised"]) == 2
    assert reply.model_extra["seed"] == 5 and reply.model_extra["num_inference_steps"] == 2
    # row i is seeded seed + i: the image the Python API samples from that seed, with those tags
    text = policy.prompt(CAPTION, steering["targets"])
    local = policy.sample([text, text], policy.guidance, policy.steps, [5, 6], 2)
    assert [Image.open(io.BytesIO(raw)).tobytes() for raw in png_bytes(reply)] == [i.tobytes() for i in local]


def test_steering_changes_the_image_and_a_seed_repeats_it(server, client):
    _, models = server
    one = png_bytes(draw(client, models[0].id, {"weights": [1, 0]}, {"seed": 3}))
    again = png_bytes(draw(client, models[0].id, {"weights": [1, 0]}, {"seed": 3}))
    low = {"targets": {"recognizability": -2, "compressibility": 2}}
    other = png_bytes(draw(client, models[0].id, low, {"seed": 3}))
    assert one == again and one != other


def pixels(raw: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(raw)), dtype=int)


def test_requests_of_different_steering_batched_together_give_the_images_they_give_alone(
    server, client, monkeypatch
):
    _, models = server
    engine = models[0].engine
    requests = [({"weights": [w, 1 - w]}, 10 + k, None) for k, w in enumerate((0.0, 0.25, 0.5, 0.75, 1.0))]
    requests += [({"targets": {"recognizability": 1.5, "compressibility": -1}}, 3, None), (None, 4, 3.0)]

    def one(item):
        steering, seed, guidance = item
        extra = {"seed": seed, **({"guidance_scale": guidance} if guidance is not None else {})}
        return png_bytes(draw(client, models[0].id, steering, extra, n=2))

    solo = [one(item) for item in requests]
    # the worker waits for all 14 rows (however slowly the requests arrive), then starts them
    # together: the 12 of the model's guidance in one batch, the 2 of guidance 3.0 in another
    monkeypatch.setattr(engine, "batch_wait", 120.0)
    monkeypatch.setattr(engine, "max_batch", 2 * len(requests))
    monkeypatch.setattr(engine, "largest_batch", 0)
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(one, requests))
    assert engine.largest_batch == 12
    # the same images: the CPU's kernels for one row and for many sum in another order, which can
    # move a rare pixel by one grey level (never more); which mates share the batch changes nothing
    # (the next test)
    pairs = [(a, b) for x, y in zip(solo, together, strict=True) for a, b in zip(x, y, strict=True)]
    differences = np.stack([abs(pixels(a) - pixels(b)) for a, b in pairs])
    assert differences.max() <= 1 and (differences > 0).mean() < 0.01


def test_a_rows_image_does_not_depend_on_its_batch_mates(server):
    """Rows queued together are sampled together; the same row (caption, tags, seed) beside other
    rows of other steering gives the same bytes."""
    _, models = server
    policy = models[0].policy
    engine = ImageEngine(policy, max_batch=8, batch_wait=0.5)
    row = policy.prompt(CAPTION, policy.targets_for([1, 0]))

    def batch(mates: list[tuple[str, int]]) -> bytes:
        jobs = [ImageJob(row, 42, policy.guidance, policy.steps)]
        jobs += [ImageJob(text, seed, policy.guidance, policy.steps) for text, seed in mates]
        engine.submit(jobs)
        assert all(job.done.wait(60) and job.error is None for job in jobs)
        return jobs[0].image.tobytes()

    low = policy.prompt(CAPTION, {"recognizability": -2.0, "compressibility": 2.0})
    first = batch([(policy.prompt(CAPTION, policy.targets_for([0, 1])), 1), (low, 2), (CAPTION, 3)])
    second = batch([(low, 9), (policy.prompt("a handwritten digit two", policy.targets_for([1, 1])), 8),
                    (row, 7)])  # fmt: skip
    assert first == second and engine.largest_batch == 4


class Recording:
    """An image policy that records the rows of each `sample` call and makes a blank image each."""

    def __init__(self):
        self.calls = []

    def sample(self, texts, guidance, steps, seeds, batch_size):
        self.calls.append((list(texts), guidance, steps, list(seeds)))
        return [Image.new("L", (2, 2), seed % 256) for seed in seeds]


def test_the_engine_samples_waiting_rows_together_grouped_by_guidance_and_steps():
    policy = Recording()
    engine = ImageEngine(policy, max_batch=8, batch_wait=0.5)
    jobs = [ImageJob("a <rm1> 1.0", 1, 7.5, 2), ImageJob("b <rm1> -1.0", 2, 7.5, 2),
            ImageJob("c", 3, 1.0, 2), ImageJob("d", 4, 7.5, 2)]  # fmt: skip
    engine.submit(jobs)
    for job in jobs:
        assert job.done.wait(10) and job.error is None
    assert sorted(policy.calls) == [
        (["a <rm1> 1.0", "b <rm1> -1.0", "d"], 7.5, 2, [1, 2, 4]),
        (["c"], 1.0, 2, [3]),
    ]
    assert [job.image.getpixel((0, 0)) for job in jobs] == [1, 2, 3, 4]
    assert engine.largest_batch == 3


def post(server, path, body, raw: str | None = None) -> httpx.Response:
    running, _ = server
    if raw is not None:
        return httpx.post(running.url + path, content=raw, headers={"content-type": "application/json"})
    return httpx.post(running.url + path, json=body, timeout=60)


@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        ({"guidance_scale": -1}, "guidance_scale", "at least 0"),
        ({"num_inference_steps": 0}, "num_inference_steps", "at least 1"),
        ({"num_inference_steps": 5000}, "num_inference_steps", "at most 1000"),
        ({"steering": {"weights": {"funny": 1}}}, "steering.weights", "funny"),
        ({"steering": {"targets": {"recognizability": 1}}}, "steering.targets", "compressibility"),
        ({"steering": {"levels": {"recognizability": 2}}}, "steering.levels", "does not apply"),
        ({"size": "32x32"}, "size", "16x16"),
        ({"size": "1024x1024"}, "size", "16x16"),
        ({"n": 0}, "n", "at least 1"),
        ({"n": 11}, "n", "at most 10"),
        ({"prompt": ""}, "prompt", "at least 1"),
        ({"prompt": "   "}, "prompt", "must have text"),
        ({"prompt": "seven " * 80}, "prompt", "tokens"),
        ({"response_format": "url"}, "response_format", "b64_json"),
    ],
)
def test_bad_image_requests_are_400s_naming_the_field(server, fields, param, message):
    _, models = server
    reply = post(server, "/v1/images/generations", {"model": models[0].id, "prompt": CAPTION, **fields})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and message in error["message"], error
    assert error["type"] == "invalid_request_error"


def test_the_steering_header_matches_the_body_and_any_64_bit_seed_is_taken(server):
    _, models = server
    for seed in (-(2**63), 2**63 - 1):
        body = {"model": models[0].id, "prompt": CAPTION, "n": 2, "seed": seed}
        body["steering"] = {"weights": [1, 3]}
        reply = post(server, "/v1/images/generations", body)
        assert reply.status_code == 200, reply.text
        assert json.loads(reply.headers["x-steering"]) == reply.json()["steering"]
        assert reply.json()["seed"] == seed and len(reply.json()["data"]) == 2


def test_a_nan_guidance_scale_is_refused_naming_it(server):
    _, models = server
    raw = json.dumps({"model": models[0].id, "prompt": CAPTION})[:-1] + ', "guidance_scale": NaN}'
    reply = post(server, "/v1/images/generations", None, raw=raw)
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "guidance_scale"


def test_the_openai_client_sees_a_bad_request_naming_the_field(server, client):
    _, models = server
    with pytest.raises(openai.BadRequestError) as caught:
        draw(client, models[0].id, {"weights": {"sharpness": 1}})
    assert caught.value.body["param"] == "steering.weights" and "sharpness" in caught.value.body["message"]


def test_images_and_text_each_go_to_their_own_endpoint(server, client):
    _, models = server
    image, text = models[0].id, models[1].id
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=image, messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.body["param"] == "model" and "makes images" in caught.value.body["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        draw(client, text)
    assert caught.value.body["param"] == "model" and "makes text" in caught.value.body["message"]
    scored = post(server, "/v1/score", {"model": image, "prompt": CAPTION, "responses": ["x"]})
    assert scored.status_code == 400 and "images" in scored.json()["error"]["message"]


def test_a_full_image_queue_answers_503(image_dir):
    model = ServedModel.load(str(image_dir), max_batch=4, max_queue=1)
    running = BackgroundServer(create_app([model]))
    try:
        reply = httpx.post(
            running.url + "/v1/images/generations", json={"model": model.id, "prompt": CAPTION, "n": 2}
        )
        assert reply.status_code == 503 and reply.headers["retry-after"] == "1"
        assert reply.json()["error"]["code"] == "queue_full"
    finally:
        running.stop()


def test_the_playground_draws_two_columns_of_images_for_two_slider_settings(server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from steerable.serving.local import headless_chromium

    running, models = server
    policy = models[0].policy
    driver = headless_chromium()
    try:
        driver.get(running.url + "/")
        WebDriverWait(driver, 60).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#panel-a [data-objective]")
        )
        Select(driver.find_element(By.ID, "model")).select_by_visible_text(models[0].id)
        assert not driver.find_element(By.ID, "max_tokens").is_displayed()
        assert (
            driver.find_element(By.ID, "prompt").get_property("value") == CAPTION
        )  # a caption, not a question
        count = driver.find_element(By.ID, "n")
        count.clear()
        count.send_keys("2")
        driver.find_element(By.ID, "go").click()
        status = driver.find_element(By.ID, "status")
        WebDriverWait(driver, 120).until(lambda d: status.text not in ("", "generating…"))
        assert status.text == "done"
        for panel, weights in (("a", [1, 0]), ("b", [0, 1])):  # A leans on the first slider, B the last
            images = driver.find_elements(By.CSS_SELECTOR, f"#panel-{panel} .images img")
            assert [i.get_property("naturalWidth") for i in images] == [16, 16]
            assert all(i.get_attribute("src").startswith("data:image/png;base64,") for i in images)
            text = driver.find_element(By.CSS_SELECTOR, f"#panel-{panel} .applied").text
            assert json.loads(text.removeprefix("applied: "))["targets"] == pytest.approx(
                policy.targets_for(weights)
            )
            rows = driver.find_elements(By.CSS_SELECTOR, f"#panel-{panel} .scores tr[data-objective]")
            assert [r.get_attribute("data-objective") for r in rows] == policy.names
            assert driver.find_elements(By.CSS_SELECTOR, f'#plane [data-point="achieved-{panel}"]')
        assert not driver.find_element(By.CSS_SELECTOR, "#panel-a .answer").is_displayed()
    finally:
        driver.quit()
