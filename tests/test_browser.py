"""The live page of `nmt serve` and a comparison's report.html in a real browser (headless
Chromium driven by Selenium): every system's translation appears, and hovering an output token
lights up the source tokens it attends to. Skipped, with the reason, where Chromium, its driver
or Selenium is missing (CI installs them: .ci/run). NMT_SCREENSHOTS=DIR saves the two
screenshots the docs show (docs/img)."""
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers_ckpt import multi30k_lines

pytest.importorskip("fastapi", reason="nmt serve needs FastAPI: pip install 'nmt[serve]'")
pytest.importorskip("selenium", reason="the browser tests need Selenium: pip install 'nmt[test]'")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    pytest.skip("headless Chromium is not installed (apt-get install chromium chromium-driver)",
                allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from nmt import plots, report_html  # noqa: E402
from nmt.search import max_output_len  # noqa: E402
from nmt.serve import Limits, create_app, load_systems  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1300,900"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    o = webdriver.ChromeOptions()
    for f in FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        o.add_argument(f)
    o.binary_location = CHROMIUM
    d = webdriver.Chrome(options=o, service=Service(DRIVER))
    d.set_page_load_timeout(30)
    yield d
    d.quit()


@pytest.fixture(scope="module")
def systems(trained_run, trained_rnn_run):
    return load_systems([f"transformer={trained_run}", f"bahdanau={trained_rnn_run}"], "cpu")


@pytest.fixture(scope="module")
def server(systems):
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(systems, Limits(window_ms=1)),
                                        host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    for _ in range(300):
        if srv.started:
            break
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    t.join(10)


def _words(text: str) -> list[str]:
    return text.split()  # what a browser shows of runs of spaces varies


def _weights(d, card) -> list[float]:
    return [float(s.get_attribute("data-weight") or 0)
            for s in card.find_elements(By.CSS_SELECTOR, ".src-token")]


def _hover_changes_highlights(d, card) -> None:
    before = _weights(d, card)
    targets = card.find_elements(By.CSS_SELECTOR, ".tgt-token")
    ActionChains(d).move_to_element(targets[0]).perform()
    after = _weights(d, card)
    assert not any(before) and after != before
    assert abs(sum(after) - 1) < 0.02  # the row of weights output token 0 attends with


def _screenshot(d, name: str) -> None:
    where = os.environ.get("NMT_SCREENSHOTS")
    if where:
        d.execute_script("window.scrollTo(0, 0)")
        d.save_screenshot(str(Path(where) / name))


def test_live_page_translates_and_shows_attention(browser, server, systems, data_dir):
    d = browser
    d.get(server)
    text = multi30k_lines(data_dir, "val", "de", 1)[0]
    d.find_element(By.ID, "src").send_keys(text)
    d.find_element(By.ID, "go").click()
    WebDriverWait(d, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".system")) == 2)
    cards = {c.get_attribute("data-system"): c for c in d.find_elements(By.CSS_SELECTOR,
                                                                          ".system")}
    assert set(cards) == {"transformer", "bahdanau"}
    for name, card in cards.items():
        want = systems[name].translator.translate([text])[0]
        assert _words(card.find_element(By.CSS_SELECTOR, ".translation").text) == _words(want)
        _hover_changes_highlights(d, card)
    heads = cards["transformer"].find_elements(By.CSS_SELECTOR, ".select-head option")
    assert heads[0].text == "average" and len(heads) == 1 + systems["transformer"].translator \
        .recipe.model.heads
    _screenshot(d, "serve.png")


def test_report_html_shows_the_same_view(browser, systems, data_dir, tmp_path):
    src = multi30k_lines(data_dir, "val", "de", 3)
    corpus = SimpleNamespace(src=src, tgt=multi30k_lines(data_dir, "val", "en", 3))
    views, hyps = {}, {}
    for name, s in systems.items():  # what report.py computes for its picked examples
        t = s.translator
        hyps[name] = t.translate(src)
        for i in (0, 2):
            views[(name, i)] = plots.sentence_attention(t.model, t.tok, src[i],
                                                        max_output_len(t.model) or 100)[:3]
    report_html.write(tmp_path / "report.html", "tiny comparison", "val", corpus,
                      [0, 2], hyps, views)
    d = browser
    d.get((tmp_path / "report.html").as_uri())
    examples = d.find_elements(By.CSS_SELECTOR, ".example")
    assert len(examples) == 2 and "tiny comparison" in d.title
    for ex, i in zip(examples, (0, 2)):
        cards = ex.find_elements(By.CSS_SELECTOR, ".system")
        assert [_words(c.find_element(By.CSS_SELECTOR, ".translation").text) for c in cards] \
            == [_words(hyps[n][i]) for n in systems]
        for c in cards:
            _hover_changes_highlights(d, c)
    _screenshot(d, "report-html.png")
