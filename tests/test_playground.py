"""The playground in headless Chromium (Debian's chromium + chromium-driver, installed by
.ci/run): sliders to streamed answers, their scores beside the targets and on the objectives'
plane, keyboard-only use, an API key, errors that show instead of hanging, MOSLIM's "off"."""

import json
from contextlib import contextmanager

import httpx
import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from steerable.conditioning import parse_levels
from steerable.serving.api import ServedModel, create_app
from steerable.serving.local import BackgroundServer, headless_chromium

KEY = "sesame"
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def ric(tiny_ric):
    return ServedModel.load(str(tiny_ric[1]), max_batch=8, max_queue=64)


@pytest.fixture(scope="module")
def moslim(tiny_ric, tiny_path, tmp_path_factory):
    """A tiny MOSLIM policy (one GRPO step on the z-score reward), served."""
    from typer.testing import CliRunner

    from steerable.cli import app

    out = tmp_path_factory.mktemp("moslim") / "policy"
    args = ["train", "moslim", "--model", tiny_path, "--stats", str(tiny_ric[1]), "--reward", "zscore"]
    args += ["--max_steps", "1", "--batch_size", "4", "--num_generations", "2", "--prompt_limit", "4"]
    args += ["--max_completion_length", "6", "--lora_r", "4", "--lora_alpha", "8", "--output_dir", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return ServedModel.load(str(out), max_batch=8, max_queue=64)


def recorded(seen: list):
    """An ASGI wrapper noting each response as (method, path, status, content type) in `seen`."""

    def wrap(app):
        async def noting_app(scope, receive, send):
            async def noting(message):
                if message["type"] == "http.response.start":
                    kind = dict(message["headers"]).get(b"content-type", b"").decode()
                    seen.append((scope["method"], scope["path"], message["status"], kind))
                await send(message)

            await app(scope, receive, noting if scope["type"] == "http" else send)

        return noting_app

    return wrap


def html_chat(status: int):
    """An ASGI wrapper answering chat completions with an HTML page, as a proxy in front can."""

    def wrap(app):
        async def proxy_app(scope, receive, send):
            if scope["type"] != "http" or scope["path"] != CHAT:
                return await app(scope, receive, send)
            headers = [(b"content-type", b"text/html")]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": b"<html><body>Bad Gateway</body></html>"})

        return proxy_app

    return wrap


@contextmanager
def page(models, api_key=None, wrap=lambda app: app):
    """The playground of a server for `models`, open in headless Chromium at 1,200 px."""
    server = BackgroundServer(wrap(create_app(models, api_key=api_key, max_tokens_limit=64)))
    driver = headless_chromium()
    try:
        driver.get(server.url + "/")
        yield driver, server
    finally:
        driver.quit()
        server.stop()


def ready(driver) -> None:
    WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#panel-a [data-objective]"))


def finished(driver) -> str:
    """Waits for the generation to end (the button usable again); the status line."""
    status = driver.find_element(By.ID, "status")
    go = driver.find_element(By.ID, "go")
    WebDriverWait(driver, 60).until(lambda d: go.is_enabled() and status.text not in ("", "generating…"))
    return status.text


def applied(driver, panel: str) -> dict:
    text = driver.find_element(By.CSS_SELECTOR, f"#panel-{panel} .applied").text
    assert text.startswith("applied: "), text
    return json.loads(text[len("applied: ") :])


def answer(driver, panel: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, f"#panel-{panel} .answer").get_property("textContent")


def score_cells(driver, panel: str, column: str) -> dict[str, str]:
    rows = driver.find_elements(By.CSS_SELECTOR, f"#panel-{panel} .scores tr[data-objective]")
    return {r.get_attribute("data-objective"): r.find_element(By.CLASS_NAME, column).text for r in rows}


def point(driver, name: str) -> tuple[float, float]:
    circle = driver.find_element(By.CSS_SELECTOR, f'#plane [data-point="{name}"]')
    return float(circle.get_attribute("cx")), float(circle.get_attribute("cy"))


def set_field(driver, field: str, value: str) -> None:
    box = driver.find_element(By.ID, field)
    box.clear()
    box.send_keys(value)


def test_a_slider_streams_both_answers_scores_them_in_the_targets_units_and_plots_them(ric):
    seen = []
    with page([ric], wrap=recorded(seen)) as (driver, server):
        ready(driver)
        assert driver.find_elements(By.CSS_SELECTOR, 'meta[name="viewport"]')
        slider = driver.find_element(By.CSS_SELECTOR, '#panel-a input[data-objective="positive"]')
        slider.send_keys(Keys.END)  # positive weight 0 -> 1 in panel A
        assert slider.get_attribute("value") == "1"
        set_field(driver, "temperature", "0")
        set_field(driver, "max_tokens", "8")
        prompt = driver.find_element(By.ID, "prompt").get_property("value")
        driver.find_element(By.ID, "go").click()
        assert finished(driver) == "done"

        targets = applied(driver, "a")["targets"]
        assert targets == pytest.approx(ric.policy.targets_for([1, 1]), abs=1e-6)  # brief 1 + positive 1
        streams = [s for s in seen if s[:2] == ("POST", CHAT)]
        assert len(streams) == 2
        assert all(s[2] == 200 and s[3].startswith("text/event-stream") for s in streams)
        # the streamed answer is the answer: the same request, not streamed
        direct = httpx.post(
            server.url + CHAT,
            json={
                "model": ric.id,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": 8,
                "temperature": 0,
                "seed": 0,
                "steering": {"weights": {"brief": 1, "positive": 1}},
            },
        ).json()
        assert answer(driver, "a") == direct["choices"][0]["message"]["content"]

        # targets and achieved scores in the same (normalised) units, the better direction said
        values = {}
        for panel in ("a", "b"):
            scored = httpx.post(
                server.url + "/v1/score",
                json={"model": ric.id, "prompt": prompt, "responses": [answer(driver, panel)]},
            ).json()
            achieved = dict(zip(scored["objectives"], scored["normalised"][0], strict=True))
            asked = applied(driver, panel)["targets"]
            assert score_cells(driver, panel, "asked") == {n: f"{v:+.2f}" for n, v in asked.items()}
            assert score_cells(driver, panel, "achieved") == {n: f"{v:+.2f}" for n, v in achieved.items()}
            assert "higher is better" in driver.find_element(By.CSS_SELECTOR, f"#panel-{panel} .scores").text
            values[f"target-{panel}"] = (asked["brief"], asked["positive"])
            values[f"achieved-{panel}"] = (achieved["brief"], achieved["positive"])

        # the plane: each point where its numbers put it (x: brief to the right, y: positive up)
        places = {name: point(driver, name) for name in values}
        for one in values:
            for other in values:
                dx, dy = (values[one][k] - values[other][k] for k in (0, 1))
                if abs(dx) > 1e-6:
                    assert (places[one][0] > places[other][0]) == (dx > 0), (one, other)
                if abs(dy) > 1e-6:
                    assert (places[one][1] < places[other][1]) == (dy > 0), (one, other)

        # a long applied: line wraps inside its panel; panel B stays beside A, in view
        width = driver.execute_script("return window.innerWidth")
        assert driver.execute_script("return document.documentElement.scrollWidth") <= width
        a, b = (driver.find_element(By.ID, f"panel-{p}").rect for p in ("a", "b"))
        assert a["x"] + a["width"] <= b["x"] and b["x"] + b["width"] <= width
        # every request the page made was answered, the icon included (no /favicon.ico 404)
        assert [s for s in seen if s[2] >= 400] == []


def test_keyboard_only_use_reaches_the_prompt_the_sliders_and_the_button(ric):
    seen = []
    with page([ric], wrap=recorded(seen)) as (driver, _):
        ready(driver)

        def press(*keys) -> None:
            ActionChains(driver).send_keys(*keys).perform()

        def tab_to(css: str):
            target = driver.find_element(By.CSS_SELECTOR, css)
            for _ in range(40):
                press(Keys.TAB)
                if driver.switch_to.active_element == target:
                    return target
            raise AssertionError(f"Tab never reached {css}")

        tab_to("#prompt")
        ActionChains(driver).key_down(Keys.CONTROL).send_keys("a").key_up(Keys.CONTROL).perform()
        press("Tell me about cats.")
        assert driver.find_element(By.ID, "prompt").get_property("value") == "Tell me about cats."
        slider = tab_to('#panel-a input[data-objective="positive"]')
        press(Keys.END)
        assert slider.get_attribute("value") == "1"
        tab_to('#panel-b input[data-objective="brief"]')
        tab_to("#go")
        press(Keys.ENTER)
        assert finished(driver) == "done"
        assert applied(driver, "a")["targets"] == pytest.approx(ric.policy.targets_for([1, 1]), abs=1e-6)
        assert answer(driver, "a") and answer(driver, "b")
        assert driver.switch_to.active_element == driver.find_element(By.ID, "go")  # focus kept
        press(Keys.SPACE)  # Space generates again
        WebDriverWait(driver, 60).until(lambda d: len([s for s in seen if s[1] == CHAT]) == 4)
        assert finished(driver) == "done"


def test_every_control_has_an_accessible_name(ric, moslim):
    with page([ric, moslim]) as (driver, _):
        for model in (ric, moslim):
            Select(driver.find_element(By.ID, "model")).select_by_visible_text(model.id)
            ready(driver)
            controls = driver.find_elements(By.CSS_SELECTOR, "input, select, textarea, button")
            names = [c.accessible_name.strip() for c in controls]
            assert all(names), [c.get_attribute("outerHTML") for c in controls if not c.accessible_name]
            steering = driver.find_elements(By.CSS_SELECTOR, "[data-objective]")
            assert len({c.accessible_name for c in steering}) == len(steering) == 4  # A's and B's differ


def test_under_an_api_key_the_page_asks_for_the_key_sends_it_and_keeps_it_for_the_tab(ric):
    seen = []
    with page([ric], api_key=KEY, wrap=recorded(seen)) as (driver, _):
        status = driver.find_element(By.ID, "status")
        WebDriverWait(driver, 30).until(lambda d: "API key" in status.text)
        key = driver.find_element(By.ID, "api_key")
        assert key.accessible_name and key.get_attribute("type") == "password"
        key.send_keys(KEY, Keys.ENTER)
        ready(driver)
        entered = len(seen)
        driver.find_element(By.ID, "go").click()
        assert finished(driver) == "done"
        assert answer(driver, "a") and score_cells(driver, "b", "achieved")
        assert [s for s in seen[entered:] if s[2] >= 400] == []
        driver.refresh()  # the tab keeps the key: the page loads its models without asking again
        ready(driver)
        assert driver.find_element(By.ID, "api_key").get_property("value") == KEY


@pytest.mark.parametrize("status", [502, 200])
def test_a_reply_that_is_not_json_shows_an_error_and_frees_the_button(ric, status):
    with page([ric], wrap=html_chat(status)) as (driver, _):
        ready(driver)
        driver.find_element(By.ID, "go").click()
        assert finished(driver) != "done"
        for panel in ("a", "b"):
            shown = driver.find_element(By.CSS_SELECTOR, f"#panel-{panel} .answer")
            assert "error" in shown.get_attribute("class") and "Bad Gateway" in shown.text


def test_a_server_that_went_away_shows_an_error_and_frees_the_button(ric):
    with page([ric]) as (driver, server):
        ready(driver)
        server.stop()
        driver.find_element(By.ID, "go").click()
        assert finished(driver) != "done"
        shown = driver.find_element(By.CSS_SELECTOR, "#panel-a .answer")
        assert "error" in shown.get_attribute("class") and "did not answer" in shown.text


def test_the_button_is_disabled_while_generating_so_a_second_click_sends_nothing(ric):
    seen = []
    with page([ric], wrap=recorded(seen)) as (driver, _):
        ready(driver)
        disabled = driver.execute_script(
            "const go = document.getElementById('go'); go.click(); const busy = go.disabled; go.click(); "
            "return busy;"
        )
        assert disabled
        assert finished(driver) == "done"
        assert len([s for s in seen if s[1] == CHAT]) == 2  # one pair of answers, not two


def test_moslim_pickers_all_off_ask_for_no_tags(moslim):
    policy = moslim.policy
    assert policy.steering_for(levels={}) == {}  # no levels: no tags
    untagged = moslim.render(policy.steered_messages([{"role": "user", "content": "hi"}], {}))
    assert parse_levels(untagged) == {}
    with page([moslim]) as (driver, server):
        ready(driver)
        chosen = {("b", "brief"): "2"}  # panel A: every picker off; panel B: brief at level 2
        for picker in driver.find_elements(By.CSS_SELECTOR, ".panel select[data-objective]"):
            where = (picker.find_element(By.XPATH, "ancestor::*[@class='panel']").get_attribute("id")[-1],
                     picker.get_attribute("data-objective"))  # fmt: skip
            Select(picker).select_by_value(chosen.get(where, ""))
        driver.find_element(By.ID, "go").click()
        assert finished(driver) == "done"
        assert applied(driver, "a") == {"levels": {}}
        assert applied(driver, "b") == {"levels": {"brief": 2}}
        assert score_cells(driver, "a", "asked") == {"brief": "off", "positive": "off"}
        assert score_cells(driver, "b", "asked") == {"brief": "level 2", "positive": "off"}
        # levels are not in score units: the plane shows the answers, not targets
        assert driver.find_elements(By.CSS_SELECTOR, '#plane [data-point="achieved-a"]')
        assert not driver.find_elements(By.CSS_SELECTOR, '#plane [data-point^="target"]')
        reply = httpx.post(
            server.url + CHAT,
            json={
                "model": moslim.id,
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4,
                "steering": {"levels": {}},
            },
        )
        assert reply.status_code == 200 and reply.json()["steering"] == {"levels": {}}


def test_the_models_measured_front_is_drawn_on_the_plane(tiny_ric, tmp_path):
    """A front.json beside the model (what `steerable compare` records) reaches the model's card
    in raw and normalised units, and the page draws its points and its non-dominated line."""
    import shutil

    import numpy as np

    from steerable.evaluation.report import EvaluationResult, read_front, record_front
    from steerable.evaluation.sweep import SweepPoint

    directory = shutil.copytree(tiny_ric[1], tmp_path / "ric-with-front")
    without = ServedModel.load(str(directory), max_batch=2, max_queue=4)
    assert "front" not in without.card()
    means = [[-3.0, 0.1], [-6.0, 0.5], [-9.0, 0.9], [-9.5, 0.2]]  # the last is dominated
    points = [
        SweepPoint(
            weights=[1 - i / 3, i / 3], mean=m, stderr=[0.0, 0.0], n=10, seconds=1.0, generated_tokens=40
        )
        for i, m in enumerate(means)
    ]
    result = EvaluationResult(
        method="ric", model=str(directory), names=without.policy.names, rewards={}, points=points,
        controllability={}, prompts_sha256="x", num_prompts=5, sampling={}, samples=2, resolution=3,
    )  # fmt: skip
    record_front(result, directory)
    served = ServedModel.load(str(directory), max_batch=2, max_queue=4)
    front = served.card()["front"]
    assert front == read_front(directory, served.policy.rewards)
    assert [p["on_front"] for p in front["points"]] == [True, True, True, False]
    expected = served.policy.rewards.normalise(np.array(means)).tolist()
    assert [p["normalised"] for p in front["points"]] == expected
    with page([served]) as (driver, server):
        ready(driver)
        card = httpx.get(f"{server.url}/v1/models/{served.id}").json()
        assert card["front"]["points"][0]["mean"] == means[0]
        drawn = driver.find_elements(By.CSS_SELECTOR, '#plane [data-point^="front-"]')
        assert len(drawn) == 4  # shown as soon as the model is chosen, before any answer
        line = driver.find_element(By.CSS_SELECTOR, '#plane [data-front="line"]').get_attribute("points")
        assert len(line.split()) == 3  # through the non-dominated points only
        x = [float(c.get_attribute("cx")) for c in drawn]
        assert (x[0] > x[1] > x[2]) == (expected[0][0] > expected[1][0] > expected[2][0])
        assert "measured front" in driver.find_element(By.ID, "plane-caption").text


def test_a_model_steered_by_keys_the_page_cannot_set_gets_no_sliders_and_no_weights(ric):
    """Controls follow the keys a card lists: a model that takes targets alone gets no weight
    sliders, its requests carry no weights (which it would refuse), and the caption says what it
    asks in without guessing examples."""
    from dataclasses import fields

    class TargetsOnly(ServedModel):
        accepts = ("targets",)

    only = TargetsOnly(**{f.name: getattr(ric, f.name) for f in fields(ServedModel)})
    seen = []
    with page([only], wrap=recorded(seen)) as (driver, _):
        WebDriverWait(driver, 60).until(
            lambda d: "cannot set its steering (targets)" in d.find_element(By.ID, "panel-a").text
        )
        assert not driver.find_elements(By.CSS_SELECTOR, ".panel [data-objective]")
        driver.find_element(By.ID, "go").click()
        assert finished(driver) == "done"  # a request with {weights} would have been refused
        assert ("POST", CHAT, 200, "text/event-stream; charset=utf-8") in seen
        assert "targets" in applied(driver, "a")
        assert "examples" not in driver.find_element(By.ID, "plane-caption").get_property("textContent")
