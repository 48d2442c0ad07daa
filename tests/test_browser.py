"""A lesson works in a real browser: JupyterLab on 127.0.0.1, opened by headless Chromium.

The test copies one lesson (03_prompting) into a temporary folder laid out like the repository (so its
relative data path still reaches ../shared/data), starts JupyterLab there, opens the lesson in Debian's
`chromium` driven by `chromium-driver` through selenium, runs the cells above the lesson's first figure,
then runs the figure's cell itself with Shift+Enter in its editor, and waits for the rendered image. A
screenshot goes to the test's temporary folder. Without a browser the test skips on a workstation and
fails under CI (`.ci/run` installs one)."""
import json, os, shutil
from pathlib import Path

import pytest

from test_lab import ROOT, start_lab

LESSON = "03_prompting.ipynb"
FIGURE_CELL = "ks = [0, 1, 2, 4, 8]"  # how the source of the lesson's first figure cell begins
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
RUN_TIMEOUT = 180  # seconds for the kernel to start and run the cells up to the figure (smoke size)


def _need_browser():
    "Skip (fail under CI) when selenium, chromium or chromium-driver is missing."
    missing = [name for name, ok in (("chromium", CHROMIUM), ("chromium-driver", DRIVER)) if not ok]
    try: import selenium  # noqa: F401
    except ImportError: missing.append("selenium")
    if missing:
        msg = f"no real browser: {', '.join(missing)} not installed (apt install chromium chromium-driver; pip install selenium)"
        if os.environ.get("CI"): pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture
def browser(tmp_path):
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chromium'}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER, log_output=str(tmp_path / "chromedriver.log")), options=opts)
    try: yield driver
    finally: driver.quit()


def _lesson_copy(tmp: Path) -> Path:
    "tmp/work/nbs/<lesson> beside tmp/shared (a link to the real data): the lesson's ../../shared/data resolves."
    nbs = tmp / "work" / "nbs"; nbs.mkdir(parents=True)
    shutil.copy(ROOT / "nbs" / LESSON, nbs / LESSON)
    (tmp / "shared").symlink_to((ROOT.parent / "shared").resolve())
    settings = tmp / "lab-settings" / "@jupyterlab" / "docmanager-extension"
    settings.mkdir(parents=True)
    (settings / "plugin.jupyterlab-settings").write_text(json.dumps({"autosave": False}))
    return nbs


JS_PANEL = """const w = window.jupyterapp && Array.from(window.jupyterapp.shell.widgets('main'))
  .find(x => x.content && x.sessionContext && x.context && x.context.path === '%s');""" % LESSON
JS_KERNEL_IDLE = JS_PANEL + """
const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
return !!(k && k.status === 'idle' && w.content.widgets.length > 0);"""
JS_FIGURE_INDEX = JS_PANEL + "return w.content.widgets.findIndex(c => c.model.sharedModel.getSource().startsWith(arguments[0]));"
JS_RUN_ABOVE = JS_PANEL + """
w.content.activeCellIndex = arguments[0];
window.jupyterapp.commands.execute('notebook:run-all-above');"""
JS_STATE = JS_PANEL + """
const cells = w.content.widgets.slice(0, arguments[0] + 1).filter(c => c.model.type === 'code');
const errors = cells.flatMap(c => c.model.outputs.toJSON()).filter(o => o.output_type === 'error')
  .map(o => o.ename + ': ' + o.evalue);
return {counts: cells.map(c => c.model.executionCount), errors: errors,
        busy: w.sessionContext.session.kernel.status !== 'idle'};"""


def test_a_lesson_runs_and_draws_in_chromium(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    nbs = _lesson_copy(tmp_path)
    with start_lab(nbs, tmp_path, extra_args=("--LabApp.expose_app_in_browser=True",),
                   extra_env={"IN_TEST": "1", "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings")}) as lab:
        browser.get(f"{lab.base}/lab/tree/{LESSON}?token={lab.token}")
        wait = WebDriverWait(browser, RUN_TIMEOUT, poll_frequency=0.5)
        try:
            wait.until(lambda d: d.execute_script(JS_KERNEL_IDLE))
            fig = browser.execute_script(JS_FIGURE_INDEX, FIGURE_CELL)
            assert fig > 0, f"{LESSON} has no cell starting {FIGURE_CELL!r}"
            browser.execute_script(JS_RUN_ABOVE, fig)  # every cell above the figure, as the Run menu does
            wait.until(lambda d: (s := d.execute_script(JS_STATE, fig - 1)) and (s["errors"] or (
                not s["busy"] and all(s["counts"]))))
            state = browser.execute_script(JS_STATE, fig - 1)
            assert not state["errors"], state["errors"]
            cell = browser.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel .jp-Cell")[fig]
            browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", cell)
            cell.find_element(By.CSS_SELECTOR, ".jp-InputArea-editor").click()  # into the figure cell's editor ...
            ActionChains(browser).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()  # ... run it
            img = wait.until(lambda d: next((i for i in cell.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output img")
                                             if d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i)), None))
            width, height = browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", img)
            state = browser.execute_script(JS_STATE, fig)
        finally:
            browser.save_screenshot(str(tmp_path / "lesson.png"))
    assert not state["errors"], state["errors"]
    assert state["counts"][-1], "the figure cell has no execution count"
    assert width >= 200 and height >= 100, (width, height)  # a drawn figure, not a broken-image icon
    assert (tmp_path / "lesson.png").stat().st_size > 10_000
