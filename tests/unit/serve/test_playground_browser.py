"""The playground in a real headless Chromium (Debian's ``chromium``, driven by Playwright; no
browser is ever downloaded): the page loads behind the API key (HTTP Basic), a streamed
generation completes, classification scores and a QA answer highlighted in its context show
(task pipelines stood in for), and the attention heatmap renders with CJK token labels. A screenshot is
saved to reports/playground.png. Skipped, with the reason, where chromium or playwright is missing
(``.ci/run`` installs chromium with apt-get)."""

import os
import shutil
import sys
import types
from pathlib import Path

import pytest

from tests.unit.serve.conftest import KEY, live_server

CHROMIUM = os.environ.get("LMLAB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]
REPORTS = Path(__file__).parents[3] / "reports"


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install -y chromium)")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        except Exception as e:  # a chromium that cannot start here (sandbox, libraries)
            pytest.skip(f"chromium at {CHROMIUM} does not start: {str(e).splitlines()[0]}")
        yield b
        b.close()


def fake_pipeline(task, model_dir):
    """Stands in for `lmlab.tasks.pipeline` (same call shapes and outputs), so the browser test needs
    no trained task models."""
    if task == "classification":
        return lambda text: {"label": "positive", "score": 0.8, "scores": {"positive": 0.8, "negative": 0.2}}
    if task == "qa":
        def answer(example):
            context = example["context"]
            start = context.index("Paris")
            return {"answer": "Paris", "score": 0.9, "start": start, "end": start + 5}
        return answer
    raise KeyError(task)


def test_playground_generates_and_draws_attention(browser, registry, monkeypatch):
    fake = types.ModuleType("lmlab.tasks.pipeline")
    fake.pipeline = fake_pipeline
    monkeypatch.setitem(sys.modules, "lmlab.tasks", types.ModuleType("lmlab.tasks"))
    monkeypatch.setitem(sys.modules, "lmlab.tasks.pipeline", fake)
    with live_server(registry, api_key=KEY) as (url, _):
        ctx = browser.new_context(http_credentials={"username": "me", "password": KEY},
                                  viewport={"width": 1200, "height": 1000})
        page = ctx.new_page()
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(url + "/")
        page.wait_for_function("document.querySelectorAll('#model option').length > 0", timeout=15000)
        assert page.locator("#model option").first.get_attribute("value") == "tiny"

        page.fill("#gen-prompt", "The cat")
        page.fill("#gen-max", "12")
        page.fill("#gen-temp", "0")
        page.click("#gen-go")
        page.wait_for_selector("#gen-out[data-done='1']", timeout=20000)
        assert "finish: length" in page.inner_text("#gen-info")
        generated = page.inner_text("#gen-text")
        assert generated.strip()

        page.click("nav button[data-tab='cls']")
        page.click("#cls-go")
        page.wait_for_selector("#cls-out .score", timeout=10000)
        rows = page.locator("#cls-out .score").all_inner_texts()
        assert [r.split()[0] for r in rows] == ["positive", "negative"] and "0.800" in rows[0]

        page.click("nav button[data-tab='qa']")
        page.fill("#qa-ctx", "埃菲尔铁塔 The Eiffel Tower is in Paris, France.")
        page.click("#qa-go")
        page.wait_for_selector("#qa-out mark", timeout=10000)
        assert page.inner_text("#qa-out mark") == "Paris"

        page.click("nav button[data-tab='att']")
        page.fill("#att-text", "The cat 猫坐在垫子上")
        page.click("#att-go")
        page.wait_for_function("document.getElementById('heatmap').dataset.cells", timeout=20000)
        cells = int(page.eval_on_selector("#heatmap", "c => c.dataset.cells"))
        n_tokens = len(registry.get("tiny").tokenizer.encode("The cat 猫坐在垫子上"))
        assert cells == n_tokens * n_tokens
        # the canvas is not blank: many distinct colours (cells and labels)
        colours = page.eval_on_selector("#heatmap", """c => {
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data, seen = new Set();
            for (let i = 0; i < d.length; i += 4 * 7) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
            return seen.size; }""")
        assert colours > 20
        layers = page.locator("#att-layer option").count()
        heads = page.locator("#att-head option").count()
        assert (layers, heads) == (2, 3)
        page.select_option("#att-head", "2")  # another head redraws
        REPORTS.mkdir(exist_ok=True)
        page.screenshot(path=str(REPORTS / "playground.png"), full_page=True)
        assert all(u.startswith(url) for u in requests), [u for u in requests if not u.startswith(url)]
        ctx.close()
    assert (REPORTS / "playground.png").stat().st_size > 10_000
