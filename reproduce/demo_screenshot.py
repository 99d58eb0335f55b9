"""The README's screenshot of ``emca demo``: a test person of the checkpoint's dataset as the source, a pose of
the page's gallery as the target, generated and captured in a headless Chromium.

    python reproduce/demo_screenshot.py --ckpt outputs/real_pedestrians/xinggan/checkpoints/last.ckpt \\
        --dataset-root outputs/real_pedestrians/vtest --out docs/demo.png

Needs the demo extra (Gradio, selenium) and Debian's ``chromium`` and ``chromium-driver``. The model is the
reduced XingGAN trained on the people of OpenCV's ``vtest.avi`` (``reproduce/real_pedestrians.py``), so the page
shows real pedestrians; ``--source`` and ``--target`` pick the test image and the gallery pose by index.
"""

from __future__ import annotations

import argparse
import shutil
import socket
from io import BytesIO
from pathlib import Path

from PIL import Image

from emca.demo import DemoOptions, PoseTransferDemo, build_app
from emca.io import atomic_save_image


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--dataset-root", required=True)
    parser.add_argument("--source", type=int, default=0, help="index of the test image used as the source")
    parser.add_argument("--target", type=int, default=5, help="index of the gallery pose used as the target")
    parser.add_argument("--out", type=Path, default=Path("docs/demo.png"))
    args = parser.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    binary, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver_path is None:
        raise SystemExit("needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver")
    options = DemoOptions(ckpt=args.ckpt, dataset_root=args.dataset_root, device="cpu")
    demo = PoseTransferDemo(options)
    app = build_app(options, demo)
    port = free_port()
    browser_options = webdriver.ChromeOptions()
    browser_options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1500"):
        browser_options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=browser_options)
    try:
        app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        wait = WebDriverWait(driver, 60)
        driver.get(f"http://127.0.0.1:{port}/")
        wait.until(lambda page: page.find_elements(By.ID, "generate"))
        names = demo.dataset.names
        driver.find_elements(By.CSS_SELECTOR, "#pose-gallery button.thumbnail-item")[args.target].click()
        wait.until(lambda page: page.find_element(By.CSS_SELECTOR, "#target-name textarea, #target-name input")
                   .get_attribute("value") == names[args.target])  # fmt: skip
        driver.find_element(By.CSS_SELECTOR, "#source-name input").send_keys(names[args.source], Keys.ENTER)
        driver.find_element(By.ID, "generate").click()
        wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, "#result img"))
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1280, min(int(height) + 40, 3000))
        page = Image.open(BytesIO(driver.find_element(By.TAG_NAME, "body").screenshot_as_png)).convert("RGB")
        # the title and model line, then the results (generate button to sheet): the inputs are left out
        info = driver.find_element(By.XPATH, "//*[starts-with(normalize-space(text()), 'Model ')]").rect
        generate, sheet = driver.find_element(By.ID, "generate").rect, driver.find_element(By.ID, "sheet").rect
        top = page.crop((0, 0, page.width, int(info["y"] + info["height"] + 12)))
        results = page.crop((0, int(generate["y"] - 12), page.width, int(sheet["y"] + sheet["height"] + 12)))
        shot = Image.new("RGB", (page.width, top.height + results.height), "white")
        shot.paste(top, (0, 0))
        shot.paste(results, (0, top.height))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_image(shot, args.out)
        print(f"{args.out} ({shot.width}x{shot.height}): source {names[args.source]}, target {names[args.target]}")
    finally:
        driver.quit()
        app.close()


if __name__ == "__main__":
    main()
