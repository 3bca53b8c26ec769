"""Serving a directory of experts under each mixing (`steerable serve METHOD=DIR`): the model
cards, mixed-weight requests in one batch answering as they would alone, the steering refused
by field, and the CLI's `--method` / `--divergence` on the same directory."""

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from typer.testing import CliRunner

from steerable import SteerableError
from steerable.cli import app, served_spec
from steerable.serving.api import ServedModel, create_app
from steerable.serving.local import BackgroundServer as Server
from steerable.serving.local import free_port

# each method's card: what it mixes, and a token's cost in forwards of the base model (K = 2 experts)
MIXINGS = {
    "mod": ("log-probabilities", 2),
    "soups": ("weights", 1),
    "lora-mix": ("outputs", 1),
    "genarm": ("log-probabilities", 3),  # the base and each reward model
}


@pytest.fixture(scope="module")
def server(tiny_experts, tiny_genarm):
    # the directory (written by soups) served as itself, as MOD and as LoRA output mixing; GenARM's own
    experts = [ServedModel.load(str(tiny_experts), max_batch=8, method=m) for m in (None, "mod", "lora-mix")]
    experts.append(ServedModel.load(str(tiny_genarm), max_batch=8))
    running = Server(create_app([*experts, ServedModel.load("tiny")], max_tokens_limit=64))
    yield running, {m.method: m for m in experts}
    running.stop()


def test_one_directory_is_served_under_each_mixing_and_its_card_says_how(server, client, tiny_experts):
    _, served = server
    name = tiny_experts.resolve().name
    ids = {m: served[m].id for m in MIXINGS}
    assert ids == {"mod": f"{name}:mod", "soups": name, "lora-mix": f"{name}:lora-mix", "genarm": "genarm"}
    cards = {m.id: m.model_extra for m in client.models.list().data}
    for method, (mixing, forwards) in MIXINGS.items():
        card = cards[served[method].id]
        assert (card["method"], card["mixing"], card["forwards_per_token"]) == (method, mixing, forwards)
        assert card["objectives"] == ["brief", "positive"]
        assert card["steering"] == (["weights", "divergence"] if method == "mod" else ["weights"])
    assert cards["tiny"]["mixing"] is None and cards["tiny"]["forwards_per_token"] == 1
    one = httpx.get(f"{server[0].url}/v1/models/{served['mod'].id}").json()
    assert one["mixing"] == "log-probabilities" and one["id"] == served["mod"].id


def test_mixed_weights_in_one_batch_answer_as_they_would_alone(server, client, ask):
    _, served = server
    requests = [(m, {"weights": [w, 1 - w]}, None) for m in MIXINGS for w in (0.0, 0.3, 1.0)]
    requests += [(m, {"weights": [0.7, 0.3]}, seed) for m in MIXINGS for seed in (3, 11)]  # seeded sampling
    requests += [
        ("mod", {"weights": [1.5, -0.5]}, None),
        ("mod", {"weights": [0.4, 0.6], "divergence": 0.5}, 5),
    ]

    def one(item):
        method, steering, seed = item
        kwargs = {"temperature": 0.9, "seed": seed} if seed is not None else {}
        reply = ask(served[method].id, steering, **kwargs)
        return reply.choices[0].message.content, reply.model_extra["steering"]

    alone = [one(item) for item in requests]
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(one, requests))
    assert together == alone
    assert all(served[m].engine.largest_batch > 1 for m in MIXINGS)  # they did share batches
    answers = {
        (m, json.dumps(s), seed): text for (m, s, seed), (text, _) in zip(requests, alone, strict=True)
    }
    for method in MIXINGS:  # the weights steer: the two experts alone answer differently
        first, second = (
            answers[(method, json.dumps({"weights": w}), None)] for w in ([1.0, 0.0], [0.0, 1.0])
        )
        assert first != second, method
    echoed = dict(zip([json.dumps(s) for _, s, _ in requests], [e for _, e in alone], strict=False))
    assert echoed[json.dumps({"weights": [0.4, 0.6], "divergence": 0.5})] == {
        "weights": {"brief": 0.4, "positive": 0.6},
        "divergence": 0.5,
    }


def test_a_served_answer_is_the_one_the_python_api_gives(server, client, ask):
    from steerable.generation import SamplingConfig

    _, served = server
    for method in MIXINGS:
        text = ask(served[method].id, {"weights": [0.3, 0.7]}).choices[0].message.content
        local = served[method].policy.generate(
            ["Tell me about cats."],
            preference=[0.3, 0.7],
            sampling=SamplingConfig(max_new_tokens=8, temperature=0),
        )[0]
        assert text.strip() == local, method


@pytest.mark.parametrize(
    "method, steering, param, message",
    [
        ("soups", {"weights": [1, 0, 0]}, "steering.weights", "3 weight(s)"),
        ("lora-mix", {"weights": {"kindness": 1}}, "steering.weights", "unknown objective"),
        ("soups", {"weights": [1.5, -0.5]}, "steering.weights", "negative"),
        ("lora-mix", {"weights": [1.5, -0.5]}, "steering.weights", "negative"),
        ("genarm", {"weights": [1.5, -0.5]}, "steering.weights", "negative"),
        ("genarm", {"weights": [1, 1], "divergence": 0.5}, "steering.divergence", "does not apply"),
        ("soups", {"weights": [1, 0], "divergence": 0.5}, "steering.divergence", "does not apply"),
        ("lora-mix", {"divergence": 0.0}, "steering.divergence", "does not apply"),
        ("mod", {"weights": [1, 1], "divergence": 1.5}, "steering.divergence", "[0, 1]"),
        ("mod", {"divergence": -0.1}, "steering.divergence", "[0, 1]"),
        ("mod", {"weights": [1, 1], "divergence": "high"}, "steering.divergence", "must be a number"),
        ("mod", {"weights": [1.5, -0.5], "divergence": 0.5}, "steering.weights", "reverse KL"),
        ("mod", {"weights": [0.5, -0.5]}, "steering.weights", "add up to"),
        ("mod", {"weights": [1, 0, 0]}, "steering.weights", "3 weight(s)"),
    ],
)
def test_bad_steering_is_a_400_naming_the_field(server, client, method, steering, param, message, ask):
    _, served = server
    with pytest.raises(openai.BadRequestError) as caught:
        ask(served[method].id, steering)
    error = caught.value.body
    assert error["param"] == param and message in error["message"], error
    assert error["code"] == "invalid_steering"


def test_a_serve_spec_names_the_method_it_serves_a_directory_as(tmp_path, tiny_experts):
    assert served_spec(f"mod={tiny_experts}") == (str(tiny_experts), "mod")
    assert served_spec(str(tiny_experts)) == (str(tiny_experts), None)
    odd = tmp_path / "a=b"  # a directory whose name holds "=" is a directory
    odd.mkdir()
    assert served_spec(str(odd)) == (str(odd), None)
    runner = CliRunner()
    unknown = runner.invoke(app, ["serve", f"blend={tiny_experts}", "--port", "1"])
    assert unknown.exit_code == 2 and "'blend' is not a method" in unknown.output
    moslim = moslim_directory(tiny_experts, tmp_path / "moslim")
    wrong = runner.invoke(app, ["serve", f"mod={moslim}", "--port", str(free_port())])
    assert wrong.exit_code == 2 and "holds a 'moslim' model" in wrong.output
    base = runner.invoke(app, ["serve", "mod=tiny", "--port", str(free_port())])
    assert base.exit_code == 2 and "not a steerable model directory" in base.output


def moslim_directory(experts, out):
    """The experts' directory relabelled as a MOSLIM model (what `--method mod` must refuse)."""
    import shutil

    shutil.copytree(experts, out)
    manifest = json.loads((out / "steerable.json").read_text())
    (out / "steerable.json").write_text(json.dumps({**manifest, "method": "moslim", "moslim": {"levels": 3}}))
    return out


# --- the CLI ---------------------------------------------------------------------------------
def generate(*args):
    return CliRunner().invoke(app, ["generate", "Tell me about cats.", "--max-new-tokens", "6", *args])


def test_generate_mixes_a_soups_directory_as_mod_with_a_divergence(tiny_experts, tmp_path):
    from steerable.policy import SteerablePolicy

    out = tmp_path / "mod.jsonl"
    options = ["--method", "mod", "--prefer", "0.3,0.7", "--divergence", "0.5", "--temperature", "0"]
    made = generate("--model", str(tiny_experts), *options, "--out", str(out))
    assert made.exit_code == 0, made.output
    [row] = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["weights"] == {"brief": 0.3, "positive": 0.7} and row["divergence"] == 0.5
    mod = SteerablePolicy.from_pretrained(tiny_experts, method="mod")
    greedy = {"preference": [0.3, 0.7], "max_new_tokens": 6, "temperature": 0}
    assert row["response"] == mod.generate(["Tell me about cats."], divergence=0.5, **greedy)[0]
    soups = SteerablePolicy.from_pretrained(tiny_experts)
    with pytest.raises(SteerableError, match="divergence applies to mod models; this is a soups model"):
        soups.generate(["Tell me about cats."], divergence=0.5, **greedy)


@pytest.mark.parametrize(
    "method, extra, message",
    [
        ("mod", ["--prefer", "1,1"], "holds a 'moslim' model; --method mod loads 'mod' or 'soups'"),
        ("soups", ["--prefer", "1,1", "--divergence", "0.5"], "--divergence steers mod models"),
        ("lora-mix", ["--divergence", "0"], "--divergence steers mod models"),
        ("soups", ["--prefer", "1.5,-0.5"], "is negative"),
        ("mod", ["--prefer", "1,1", "--divergence", "2"], "divergence must be"),
        ("blend", [], "blend"),
    ],
)
def test_generate_refuses_what_the_method_does_not_take(tiny_experts, tmp_path, method, extra, message):
    model = moslim_directory(tiny_experts, tmp_path / "moslim") if "moslim" in message else tiny_experts
    refused = generate("--model", str(model), "--method", method, *extra)
    assert refused.exit_code == 2 and message in " ".join(refused.output.split()), refused.output


def test_evaluate_sweeps_a_soups_directory_as_mod(tiny_experts, tmp_path):
    def evaluate(method, out, *extra):
        small = ["--limit", "2", "--resolution", "1", "--max-new-tokens", "4", "--yes", *extra]
        command = ["evaluate", "--method", method, "--model", str(tiny_experts), "--out", str(out), *small]
        return CliRunner().invoke(app, command)

    done = evaluate("mod", tmp_path / "mod", "--divergence", "0.5")
    assert done.exit_code == 0, done.output
    result = json.loads((tmp_path / "mod" / "result.json").read_text())
    assert result["method"] == "mod-alpha0.5" and len(result["points"]) == 2
    refused = evaluate("soups", tmp_path / "soups", "--divergence", "0.5")
    assert refused.exit_code == 2 and "--divergence applies to MOD models only" in refused.output


def test_the_playground_sets_each_mixings_weights_from_its_card(server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from test_playground import applied, finished, page, ready, set_field

    _, served = server
    with page(list(served.values())) as (driver, _):
        ready(driver)
        for method, (mixing, forwards) in MIXINGS.items():
            Select(driver.find_element(By.ID, "model")).select_by_visible_text(served[method].id)
            sliders = driver.find_elements(By.CSS_SELECTOR, "#panel-a input[data-objective]")
            assert [s.get_attribute("data-objective") for s in sliders] == ["brief", "positive"]
            cost = f"mixes its experts' {mixing}, {forwards} forward(s) a token"
            assert driver.find_element(By.ID, "method").text == f"{method} · {cost}"
            set_field(driver, "temperature", "0")
            set_field(driver, "max_tokens", "6")
            driver.find_element(By.ID, "go").click()
            assert finished(driver) == "done", method
            assert applied(driver, "a")["weights"] == {"brief": 1.0, "positive": 0.0}
            assert applied(driver, "b")["weights"] == {"brief": 0.0, "positive": 1.0}
            assert ("divergence" in applied(driver, "a")) == (method == "mod")
