"""The playground's screenshot in docs/: a served model, two settings side by side, answered.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/playground_screenshot.py MODEL_DIR docs/playground.png

For an NP-DPO directory, panel A gets five held-out choices of a brief-only user and panel B of a
positive-only user (the simulated users of `steerable evaluate`); for RiC and MOSLIM, the
page's own starting sliders (all weight on the first objective in A, on the last in B; MOSLIM:
the first objective at the top level in A, the last in B, the others off). The shot takes in
both answers, their scores and the objectives' plane. Headless Chromium, as the browser test
drives it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from steerable.serving.api import ServedModel, create_app
from steerable.serving.local import BackgroundServer, headless_chromium


def main(model_dir: str, out: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    model = ServedModel.load(model_dir)
    server = BackgroundServer(create_app([model]))
    driver = headless_chromium("1200,1250")
    try:
        driver.get(server.url + "/")
        wait = WebDriverWait(driver, 600)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#panel-a .controls *"))
        if model.method == "np-dpo":
            from steerable.data.loading import read_table
            from steerable.methods.np_dpo.steering import simulated_examples

            pairs = read_table(Path(model_dir) / model.policy.manifest.fewshot["heldout_pairs"])
            for panel, weights in (("a", [1, 0]), ("b", [0, 1])):
                examples = simulated_examples(pairs, model.policy.rewards, weights, 5, seed=0)
                box = driver.find_element(By.CSS_SELECTOR, f"#panel-{panel} .examples")
                driver.execute_script(
                    "arguments[0].value = arguments[1]", box, json.dumps(examples, indent=1)
                )
        driver.find_element(By.ID, "go").click()
        wait.until(lambda d: d.find_element(By.ID, "status").text == "done")
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(out)
        for panel in ("a", "b"):
            print(panel, driver.find_element(By.CSS_SELECTOR, f"#panel-{panel} .answer").text)
            print(panel, driver.find_element(By.CSS_SELECTOR, f"#panel-{panel} .scores").text)
    finally:
        driver.quit()
        server.stop()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
