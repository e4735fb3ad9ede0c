"""The picker page in a real headless browser: Debian chromium + chromedriver, driven by selenium.

Needs (Debian): `apt-get update && apt-get install -y chromium chromium-driver`, and selenium (dev extras).
Selenium is pointed at /usr/bin/chromedriver, so Selenium Manager never downloads a browser or driver.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixture_wheels import PY, buildtool, clean_env, label, make_wheel, serve
from provenance_samples import current_provenance

from buildtool.publish.commands import TORCH_OF_THIS_PYTHON

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    import selenium  # noqa: F401
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
    HAVE_SELENIUM = True
except ImportError:  # pragma: no cover - reported by the skip below
    HAVE_SELENIUM = False

if not (CHROMIUM and CHROMEDRIVER and HAVE_SELENIUM):
    pytest.skip("needs Debian chromium + chromium-driver (`apt-get update && apt-get install -y chromium "
                "chromium-driver`) and selenium (`pip install -e .[dev]`)", allow_module_level=True)

# what the page prints where the installed torch's version goes (as buildtool.publish.commands does)
PIN = '"torch==' + TORCH_OF_THIS_PYTHON + '"'
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    dist = tmp_path_factory.mktemp("dist")
    make_wheel(dist, "tiny-kernel", f"1.0.0+{label('2.14')}", files={"tiny_kernel/__init__.py": ""},
               requires=("torch==2.14.*",), provenance=current_provenance(["8.0", "9.0"], ptx=True))
    make_wheel(dist, "tiny-kernel", f"1.0.0+{label('2.6', '12.4', False)}", python_tag="cp310",
               files={"tiny_kernel/__init__.py": ""}, requires=("torch==2.6.*",))
    make_wheel(dist, "tiny-kernel", f"1.0.0+{label('2.8', '12.8')}", platform_tag="win_amd64",
               files={"tiny_kernel/__init__.py": ""}, requires=("torch==2.8.*",))
    make_wheel(dist, "tiny-kernel", "1.0.0+cu13stable", python_tag="cp310", abi_tag="abi3",
               platform_tag="manylinux_2_28_x86_64", files={"tiny_kernel/__init__.py": ""}, requires=("torch>=2.10",))
    root = tmp_path_factory.mktemp("site")
    with serve(root) as url:
        proc = buildtool("index", str(dist), "--out", str(root), "--base-url", url)
        assert proc.returncode == 0, proc.stderr
        yield url, root


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_experimental_option("prefs", {
        "download.default_directory": str(downloads), "download.prompt_for_download": False,
        "safebrowsing.enabled": False,
    })
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER or ""), options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    try:
        yield driver
    finally:
        driver.quit()


def pick(driver: webdriver.Chrome, **choices: str) -> None:
    for field, text in choices.items():
        Select(driver.find_element(By.ID, field)).select_by_visible_text(text)


def text(driver: webdriver.Chrome, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def options(driver: webdriver.Chrome, field: str) -> list[str]:
    return [o.text for o in Select(driver.find_element(By.ID, field)).options]


def test_opens_on_a_combination_that_has_a_wheel(browser: webdriver.Chrome, site: tuple[str, Path]) -> None:
    url, _ = site
    browser.get(url + "/index.html")
    assert text(browser, "result-status").startswith("Found ")
    assert "No wheel" not in browser.page_source
    assert text(browser, "command").startswith("pip install --only-binary tiny-kernel --index-url ")


def test_pick_options_and_read_command(browser: webdriver.Chrome, site: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = site
    browser.get(url + "/index.html")
    assert "import sys,platform,torch" in text(browser, "oneliner")
    pick(browser, package="tiny-kernel", os="Linux x86_64", python="3.11", torch="2.14", cuda="13.0", abi="TRUE")
    command = text(browser, "command")
    channel = f"{url}/channels/cu130-torch2.14/"
    assert text(browser, "channel-url") == channel
    assert command == (f"pip install --only-binary tiny-kernel --index-url {channel} --extra-index-url "
                       f"https://pypi.org/simple tiny-kernel {PIN}")
    assert text(browser, "command-uv") == (f"uv pip install --index-url https://pypi.org/simple --extra-index-url {channel} "
                                           f"tiny-kernel {PIN}")
    assert text(browser, "command-buildtool") == f"buildtool install tiny-kernel --index {url}/"
    assert "archs 8.0 9.0 + PTX 9.0" in text(browser, "wheel-info")
    # the channel works: pip fetches exactly that wheel from it
    args = shlex.split(command)
    index = args[args.index("--index-url") + 1]
    proc = subprocess.run([PY, "-m", "pip", "download", "--no-deps", "--dest", str(tmp_path), "--index-url", index,
                           "--python-version", "3.11", "--platform", "linux_x86_64", "--only-binary", ":all:",
                           "tiny-kernel"], capture_output=True, text=True, env=clean_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [p.name for p in tmp_path.glob("*.whl")] == ["tiny_kernel-1.0.0+cu130torch2.14cxx11abiTRUE-cp311-cp311-linux_x86_64.whl"]


def test_selects_offer_only_combinations_that_exist(browser: webdriver.Chrome, site: tuple[str, Path]) -> None:
    url, _ = site
    browser.get(url + "/index.html")
    assert options(browser, "os") == ["Linux x86_64", "Windows x86_64"]
    pick(browser, os="Windows x86_64")                       # later selects follow the earlier ones
    assert options(browser, "python") == ["3.11"] and options(browser, "torch") == ["2.8"]
    assert options(browser, "cuda") == ["12.8"]
    assert text(browser, "result-status").startswith("Found tiny_kernel-1.0.0+cu128torch2.8")
    assert text(browser, "channel-url") == f"{url}/channels/cu128-torch2.8/"
    pick(browser, os="Linux x86_64")
    # the stable-ABI wheel serves every CPython >= 3.10 and every torch >= 2.10
    assert {"3.10", "3.11", "3.12", "3.13"} <= set(options(browser, "python"))
    pick(browser, python="3.13")
    assert options(browser, "torch") == ["2.14"]
    assert text(browser, "result-status").startswith("Found tiny_kernel-1.0.0+cu13stable-cp310-abi3")
    assert text(browser, "channel-url") == f"{url}/channels/cu13-stable/"


def test_paste_environment(browser: webdriver.Chrome, site: tuple[str, Path]) -> None:
    url, _ = site
    browser.get(url + "/index.html")
    box = browser.find_element(By.ID, "paste")
    box.clear()
    box.send_keys("py=3.10 torch=2.6.0+cu124 cuda=12.4 abi=False os=linux arch=x86_64")
    browser.find_element(By.ID, "apply-paste").click()
    assert "Environment applied" in text(browser, "paste-status")
    assert text(browser, "command") == (f"pip install --only-binary tiny-kernel --index-url "
                                        f"{url}/channels/cu124-torch2.6-cxx11abiFALSE/ --extra-index-url "
                                        "https://pypi.org/simple tiny-kernel torch==2.6.0+cu124")
    box.clear()
    box.send_keys("py=3.12 torch=2.5.1+cpu cuda=None abi=False os=linux arch=x86_64")
    browser.find_element(By.ID, "apply-paste").click()
    status = text(browser, "paste-status")
    assert "torch 2.5" in status and "CPU-only" in status


def test_click_wheel_link_downloads_it(browser: webdriver.Chrome, site: tuple[str, Path], downloads: Path) -> None:
    url, root = site
    browser.get(url + "/index.html")
    pick(browser, package="tiny-kernel", os="Linux x86_64", python="3.11", torch="2.14", cuda="13.0", abi="TRUE")
    link = browser.find_element(By.ID, "wheel-link")
    name = link.text
    assert name == "tiny_kernel-1.0.0+cu130torch2.14cxx11abiTRUE-cp311-cp311-linux_x86_64.whl"
    link.click()
    target = downloads / name
    WebDriverWait(browser, 30).until(lambda _: target.exists() and not list(downloads.glob("*.crdownload")))
    time.sleep(0.2)
    manifest = json.loads((root / "manifest.json").read_text())
    expected = next(w["sha256"] for w in manifest["wheels"] if w["filename"] == name)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == expected
