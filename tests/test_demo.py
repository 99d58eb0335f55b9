"""python -m emca.demo: the page's plain functions on a tiny checkpoint, and the real page in a headless browser."""

from __future__ import annotations

import json
import shutil
import socket
import urllib.request
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from _fake_data import PHOTO_SIZE, pose_json_text, write_person_photos
from _tiny_training import moved_adapter
from PIL import Image

pytest.importorskip("gradio", reason="the demo page needs Gradio, which is not installed: pip install 'emca[demo]'")

from emca import demo as demo_module  # noqa: E402
from emca.data.keypoints import JOINT_NAMES  # noqa: E402
from emca.data.skeleton import draw_skeleton  # noqa: E402
from emca.demo import DATASET, JSON, PHOTO, DemoOptions, PoseTransferDemo, build_app, parse_options  # noqa: E402
from emca.errors import ConfigError  # noqa: E402
from emca.infer import InferOptions, Pose, Transfer  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tiny_run_checkpoint: Path) -> Path:
    return tiny_run_checkpoint


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """Two synthetic photos of one person with their keypoints, their pose JSONs, and an unreadable photo."""
    folder = tmp_path_factory.mktemp("photos")
    annotations = write_person_photos(folder)
    for name, keypoints in annotations.items():
        (folder / name).with_suffix(".json").write_text(pose_json_text(keypoints))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder, annotations


@pytest.fixture(scope="module")
def demo(checkpoint: Path) -> PoseTransferDemo:
    return PoseTransferDemo(DemoOptions(ckpt=str(checkpoint), device="cpu"))


@pytest.fixture(scope="module")
def transfer(checkpoint: Path) -> Transfer:
    """emca.infer's own Transfer, loaded separately: what the page must reproduce."""
    return Transfer(InferOptions(ckpt=str(checkpoint), device="cpu"))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def test_options_use_infers_grammar_and_safe_defaults() -> None:
    options = parse_options(["ckpt=model"])
    assert (options.host, options.port, options.device, options.adapter) == ("127.0.0.1", 7860, "auto", None)
    options = parse_options(["ckpt=model", "host=0.0.0.0", "port=8000", "adapter=a.pt", "dataset_root=data/x"])
    assert (options.host, options.port, options.adapter, options.dataset_root) == ("0.0.0.0", 8000, "a.pt", "data/x")
    with pytest.raises(ConfigError, match="sauce"):
        parse_options(["ckpt=model", "sauce=1"])
    with pytest.raises(ConfigError, match="ckpt"):
        parse_options([])
    with pytest.raises(ConfigError, match="port"):
        parse_options(["ckpt=model", "port=70000"])


def test_main_launches_on_localhost_by_default(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    launched = {}

    class FakeApp:
        def launch(self, **kwargs) -> None:
            launched.update(kwargs)

    monkeypatch.setattr(demo_module, "build_app", lambda options: FakeApp())
    demo_module.main(["ckpt=model"])
    assert launched == {"server_name": "127.0.0.1", "server_port": 7860, "max_file_size": demo_module.MAX_UPLOAD}
    assert "this machine only" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        demo_module.main(["ckpt=model", "sauce=1"])
    assert exit_info.value.code == 2 and "sauce" in capsys.readouterr().err


def test_photo_and_pasted_json_give_what_infer_gives(demo: PoseTransferDemo, transfer: Transfer, photos) -> None:
    folder, annotations = photos
    outcome = demo.run(
        PHOTO, str(folder / "p0.png"), pose_json_text(annotations["p0.png"]), None,
        JSON, None, (folder / "p1.json").read_text(), None,
    )  # fmt: skip
    assert outcome.ok, outcome.message
    assert "Generated" in outcome.message

    image, framed_source = transfer.framed_source(folder / "p0.png", annotations["p0.png"])
    target_keypoints = transfer.target_pose(folder / "p1.json")
    source, expected, generated = transfer(image, framed_source, target_keypoints)
    np.testing.assert_array_equal(pixels(outcome.result), pixels(expected))
    np.testing.assert_array_equal(
        pixels(outcome.sheet), pixels(transfer.sheet(source, framed_source, target_keypoints, generated))
    )
    np.testing.assert_array_equal(pixels(outcome.target_skeleton), draw_skeleton(target_keypoints, 32, 16))
    np.testing.assert_array_equal(pixels(outcome.source_skeleton), draw_skeleton(framed_source, 32, 16))
    assert outcome.result.size == outcome.source.size == (16, 32)
    # shown at a size a person can see: 32 px -> x8 = 256 px, each model pixel an 8x8 square (nearest)
    source, target, result, sheet = outcome.shown(32)
    assert result.size == (128, 256) and source.size == target.size == (128, 256)
    np.testing.assert_array_equal(pixels(result)[::8, ::8], pixels(outcome.result))
    np.testing.assert_array_equal(pixels(result)[7::8, 7::8], pixels(outcome.result))
    assert sheet.size == (outcome.sheet.width * 8, outcome.sheet.height * 8)


def test_photos_without_keypoints_go_through_infers_detection(
    demo: PoseTransferDemo, transfer: Transfer, photos, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A photo without keypoints is detected by emca.infer's Transfer.detect (MediaPipe, faked here: it does
    not find the drawn people), for the source and for a target photo."""
    folder, annotations = photos
    asked = []

    def detect(photo: np.ndarray, path: Path, role: str = "source") -> np.ndarray:
        asked.append((path.name, role))
        return annotations[path.name]

    monkeypatch.setattr(demo.transfer, "detect", detect)
    outcome = demo.run(PHOTO, str(folder / "p0.png"), "", None, PHOTO, str(folder / "p1.png"), None, None)
    assert outcome.ok, outcome.message
    assert asked == [("p0.png", "source"), ("p1.png", "target")]

    image, framed_source = transfer.framed_source(folder / "p0.png", annotations["p0.png"])
    target_keypoints = transfer.framed_pose(Pose(annotations["p1.png"], PHOTO_SIZE), "target")
    _, expected, _ = transfer(image, framed_source, target_keypoints)
    np.testing.assert_array_equal(pixels(outcome.result), pixels(expected))


def test_dataset_test_images_and_pose_gallery(demo: PoseTransferDemo, transfer: Transfer) -> None:
    dataset = demo.dataset
    assert dataset is not None, demo.dataset_note
    assert len(dataset.names) == 6 and dataset.size == (32, 16)  # the tiny data's test split
    gallery = demo.gallery()
    assert [name for _, name in gallery] == dataset.names
    source_name, target_name = dataset.names[0], dataset.names[3]
    outcome = demo.run(DATASET, None, None, source_name, DATASET, None, None, target_name)
    assert outcome.ok, outcome.message

    image, framed_source = transfer.framed_source(dataset.path(source_name), dataset.keypoints[source_name])
    target_keypoints = transfer.framed_pose(Pose(dataset.keypoints[target_name], (32, 16)), "target")
    _, expected, _ = transfer(image, framed_source, target_keypoints)
    np.testing.assert_array_equal(pixels(outcome.result), pixels(expected))
    assert demo.dataset_preview(source_name).size == (16, 32)


def test_missing_dataset_is_said_not_offered(checkpoint: Path, tmp_path: Path) -> None:
    demo = PoseTransferDemo(DemoOptions(ckpt=str(checkpoint), device="cpu", dataset_root=str(tmp_path / "none")))
    assert demo.dataset is None and "dataset_root" in demo.dataset_note
    assert demo.gallery() == []
    outcome = demo.run(DATASET, None, None, "person00_0.png", JSON, None, "[]", None)
    assert not outcome.ok and "dataset_root" in outcome.message


def test_adapter_scale_zero_is_the_base_model(checkpoint: Path, demo: PoseTransferDemo, photos, tmp_path: Path) -> None:
    folder, annotations = photos
    adapter = moved_adapter(checkpoint, tmp_path / "adapter.pt")
    personalized = PoseTransferDemo(DemoOptions(ckpt=str(checkpoint), adapter=str(adapter), device="cpu"))
    assert personalized.has_adapter and not demo.has_adapter
    inputs = (PHOTO, str(folder / "p0.png"), pose_json_text(annotations["p0.png"]), None,
              JSON, None, (folder / "p1.json").read_text(), None)  # fmt: skip
    base = pixels(demo.run(*inputs).result)
    results = {scale: personalized.run(*inputs, scale=scale) for scale in (1.0, 0.0)}  # the slider moved down
    assert all(outcome.ok for outcome in results.values())
    np.testing.assert_array_equal(pixels(results[0.0].result), base)
    assert np.abs(pixels(results[1.0].result).astype(int) - base.astype(int)).max() > 0
    assert "scale 0" in results[0.0].message
    refused = personalized.run(*inputs, scale=2.0)
    assert not refused.ok and "[0, 1]" in refused.message


def test_user_errors_become_page_messages(demo: PoseTransferDemo, photos) -> None:
    folder, annotations = photos
    source = (PHOTO, str(folder / "p0.png"), pose_json_text(annotations["p0.png"]), None)
    no_hips = annotations["p1.png"].copy()
    no_hips[[8, 11]] = -1

    missing_hips = demo.run(*source, JSON, None, pose_json_text(no_hips), None)
    assert not missing_hips.ok and missing_hips.result is None
    assert JOINT_NAMES[8] in missing_hips.message and JOINT_NAMES[11] in missing_hips.message
    assert "pasted target pose" in missing_hips.message and "emca-demo-" not in missing_hips.message

    target_json = pose_json_text(annotations["p1.png"])
    unreadable = demo.run(PHOTO, str(folder / "broken.jpg"), "", None, JSON, None, target_json, None)
    assert not unreadable.ok and "'broken.jpg'" in unreadable.message and str(folder) not in unreadable.message

    bad_json = demo.run(*source, JSON, None, '{"keypoints": [1, 2', None)
    assert not bad_json.ok and "not valid JSON" in bad_json.message and "pasted target pose" in bad_json.message
    wrong_frame = demo.run(PHOTO, str(folder / "p0.png"), pose_json_text(annotations["p0.png"], (50, 50)), None,
                           JSON, None, pose_json_text(annotations["p1.png"]), None)  # fmt: skip
    assert not wrong_frame.ok and "pasted source keypoints" in wrong_frame.message
    # the page shows a message as written, whatever markup a pasted value brings
    assert demo_module.message_markdown("got '*x*' [a](b)", False) == r"**Could not generate.** got '\*x\*' \[a\]\(b\)"
    nothing = demo.run(PHOTO, None, None, None, JSON, None, "", None)
    assert not nothing.ok and "Upload a source photo" in nothing.message
    assert demo.photo_preview(str(folder / "broken.jpg"))[1].startswith("cannot decode 'broken.jpg'")
    assert demo.photo_preview(str(folder / "p0.png"))[0].size == (64, 96)
    text, problem = demo.json_file_text(str(folder / "p1.json"))
    assert problem == "" and json.loads(text)["height"] == PHOTO_SIZE[0]


def test_no_person_is_a_page_message(demo: PoseTransferDemo, photos, tmp_path: Path) -> None:
    pytest.importorskip("mediapipe", reason="finding no person needs MediaPipe: pip install 'emca[pose]'")
    folder, annotations = photos
    grey = tmp_path / "grey.png"
    Image.new("RGB", (64, 96), (128, 128, 128)).save(grey)
    outcome = demo.run(PHOTO, str(folder / "p0.png"), pose_json_text(annotations["p0.png"]), None,
                       PHOTO, str(grey), None, None)  # fmt: skip
    assert not outcome.ok and "no person" in outcome.message and "'grey.png'" in outcome.message
    # the way around in the page's words, not emca.infer's option names
    assert "pose JSON instead of a photo" in outcome.message and "target=" not in outcome.message


def browser():  # noqa: ANN201 (a selenium WebDriver)
    """A headless Chromium driven by selenium, or a skip saying what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (the demo extra)")
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not (binary and driver):
        pytest.skip("no headless browser: install chromium and chromium-driver (apt-get install chromium "
                    "chromium-driver) to run the page in a real browser")  # fmt: skip
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,2400"):  # fmt: skip
        options.add_argument(argument)
    options.binary_location = binary
    return webdriver.Chrome(service=Service(driver), options=options)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_page_in_a_headless_browser(demo: PoseTransferDemo, photos) -> None:
    """The real page: upload a photo and a pose JSON, click, see the result; the same from the dataset's pickers;
    an unreadable upload says so."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    folder, annotations = photos
    driver = browser()
    app = build_app(DemoOptions(), demo)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    try:
        app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        wait = WebDriverWait(driver, 30)

        def open_page() -> None:
            driver.get(url)
            wait.until(lambda page: page.find_elements(By.ID, "generate"))

        def upload(elem_id: str, path: Path) -> None:
            driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=file]").send_keys(str(path))
            # the widget then lists the file (its name split over lines: stem, suffix)
            wait.until(lambda page: path.stem in page.find_element(By.ID, elem_id).text)

        def shown_result() -> Image.Image:
            source = driver.find_element(By.CSS_SELECTOR, "#result img").get_attribute("src")
            with urllib.request.urlopen(source, timeout=10) as response:
                return Image.open(BytesIO(response.read())).convert("RGB")

        def message() -> str:
            return driver.find_element(By.ID, "message").text

        open_page()
        upload("source-photo", folder / "p0.png")
        driver.find_element(By.CSS_SELECTOR, "#source-keypoints textarea").send_keys(
            pose_json_text(annotations["p0.png"])
        )
        upload("target-json-file", folder / "p1.json")
        wait.until(lambda page: "keypoints" in page.find_element(By.CSS_SELECTOR, "#target-json textarea")
                   .get_attribute("value"))  # fmt: skip
        checked = driver.find_element(By.CSS_SELECTOR, "#target-mode input:checked").get_attribute("value")
        assert checked == JSON  # uploading a pose JSON chose it as the target
        driver.find_element(By.ID, "generate").click()
        wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, "#result img"))
        assert "Generated" in message()
        shown = shown_result()
        expected = demo.run(PHOTO, str(folder / "p0.png"), pose_json_text(annotations["p0.png"]), None,
                            JSON, None, (folder / "p1.json").read_text(), None).result  # fmt: skip
        # the page shows the image losslessly, each model pixel an 8x8 square (32 px -> 256 px tall)
        np.testing.assert_array_equal(pixels(shown), pixels(expected).repeat(8, axis=0).repeat(8, axis=1))
        assert driver.find_elements(By.CSS_SELECTOR, "#sheet img")
        # the download is the result at the model's size
        link = driver.find_element(By.CSS_SELECTOR, "#result-file a").get_attribute("href")
        with urllib.request.urlopen(link, timeout=10) as response:
            np.testing.assert_array_equal(pixels(Image.open(BytesIO(response.read())).convert("RGB")), pixels(expected))

        open_page()  # the dataset: a test image as the source, a pose of the gallery as the target
        dataset = demo.dataset
        driver.find_elements(By.CSS_SELECTOR, "#pose-gallery button.thumbnail-item")[3].click()
        wait.until(lambda page: page.find_element(By.CSS_SELECTOR, "#target-name textarea, #target-name input")
                   .get_attribute("value") == dataset.names[3])  # fmt: skip
        driver.find_element(By.CSS_SELECTOR, "#source-name input").send_keys(dataset.names[1], Keys.ENTER)
        wait.until(lambda page: page.find_element(By.CSS_SELECTOR, "#source-mode input:checked")
                   .get_attribute("value") == DATASET)  # fmt: skip
        assert driver.find_element(By.CSS_SELECTOR, "#target-mode input:checked").get_attribute("value") == DATASET
        driver.find_element(By.ID, "generate").click()
        wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, "#result img"))
        expected = demo.run(DATASET, None, None, dataset.names[1], DATASET, None, None, dataset.names[3]).result
        np.testing.assert_array_equal(pixels(shown_result()), pixels(expected).repeat(8, axis=0).repeat(8, axis=1))

        open_page()
        upload("source-photo", folder / "broken.jpg")
        wait.until(lambda page: "cannot decode" in message())  # said on upload already
        upload("target-json-file", folder / "p1.json")
        driver.find_element(By.ID, "generate").click()
        wait.until(lambda page: "Could not generate" in message())
        assert "cannot decode 'broken.jpg'" in message() and "Traceback" not in driver.page_source
        assert not driver.find_elements(By.CSS_SELECTOR, "#result img")
    finally:
        driver.quit()
        app.close()
