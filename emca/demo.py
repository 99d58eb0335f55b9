"""A web page for pose transfer (Gradio, the ``demo`` extra: ``pip install 'emca[demo]'``).

::

    emca demo ckpt=RUN/checkpoints/best.ckpt
    emca demo ckpt=MODEL_DIR adapter=RUN/adapter.pt host=0.0.0.0 port=7860 device=auto

Arguments are ``key=value`` as for ``emca infer``: ``ckpt`` (a training checkpoint or an exported model
folder; required), ``adapter`` (a MoA adapter of that checkpoint; the page then has a scale slider in [0, 1]),
``host`` (default 127.0.0.1, this machine only; 0.0.0.0 shares the page on the network), ``port`` (7860),
``device`` (auto: the GPU when there is one, else the CPU), ``dataset_root`` (where the checkpoint's dataset
lies, when not at the root stored in it), ``dataset_images`` (how many of its test images the pickers offer,
200), ``framing`` (pad|crop), ``min_visibility``, ``max_parameters`` and ``max_activation_gib`` as for emca.infer.

The page takes a source photo (an upload, or a test image of the checkpoint's dataset when that is on disk)
and a target pose (another photo, whose pose MediaPipe detects; a pose JSON, pasted or uploaded, in the format
``emca infer`` reads; or a pose of the dataset's gallery), and shows the source as the model sees
it with its skeleton, the target skeleton, the result and the sheet. A bad input (no person found, hips
missing, an unreadable image, a malformed JSON) is shown as a message in the page.

Everything the page does is in :class:`PoseTransferDemo`, whose methods take and return plain values and
which :func:`build_app` only wires to the widgets, so it is tested without a browser. The model loads through
:mod:`emca.infer`'s :class:`~emca.infer.Transfer` (weights only, networks built from emca's registry), so no
code from a loaded file runs.
"""

# no ``from __future__ import annotations``: Gradio reads the (real) annotation gr.SelectData of an event
# handler defined inside build_app, where gradio is imported

import contextlib
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image

from emca.animate import DETECTORS, EXAMPLE_VIDEO, AnimateOptions, Detectors, animate
from emca.build import build_datamodule
from emca.checkpoint import LoadLimits
from emca.cli import find_user_error, key_value_arguments, key_value_options, resolve_device, user_errors
from emca.data.datamodule import PoseTransferDataModule
from emca.data.dataset import read_split, select_pairs
from emca.data.openpose import read_json
from emca.data.skeleton import draw_skeleton
from emca.errors import ConfigError, DataError, EmcaError
from emca.infer import GIVE_KEYPOINTS, InferOptions, Pose, Transfer, source_keypoints
from emca.io import atomic_save_image
from emca.options import bounded
from emca.pose.framing import FIT_MODES
from emca.visualize import enlarged

# how a photo's keypoints can be given instead of detected, in the page's words (emca.infer names its options)
_GIVE_KEYPOINTS_IN_PAGE = {
    "source": "paste the source photo's keypoints (a pose JSON) into 'Source keypoints'",
    "target": "give the target as a pose JSON instead of a photo",
}
PHOTO, DATASET, JSON = "photo", "dataset", "json"
SOURCE_MODES = ((PHOTO, "uploaded photo"), (DATASET, "test image of the dataset"))
TARGET_MODES = ((PHOTO, "another photo (MediaPipe)"), (JSON, "pose JSON"), (DATASET, "pose of the dataset"))
MAX_UPLOAD = "50mb"  # per uploaded file: photos, not archives
PASTED = {"source": "pasted source keypoints", "target": "pasted target pose"}


@dataclass(frozen=True)
class DemoOptions:
    """``emca demo``'s key=value options (see the module docstring)."""

    ckpt: str | None = bounded(None, kind=str)
    adapter: str | None = bounded(None, kind=str)
    host: str = "127.0.0.1"
    port: int = bounded(7860, minimum=0, maximum=65535)  # a TCP port
    device: str = "auto"
    dataset_root: str | None = bounded(None, kind=str)
    dataset_images: int = bounded(200, minimum=1)
    framing: str = bounded("pad", choices=FIT_MODES)
    min_visibility: float = bounded(0.5, minimum=0, maximum=1)
    max_parameters: int = bounded(LoadLimits.max_parameters, minimum=1)
    max_activation_gib: float = bounded(LoadLimits.max_activation_gib, exclusive_minimum=0)


def parse_options(argv: list[str]) -> DemoOptions:
    """``key=value`` arguments (the grammar of ``emca infer``) -> checked options."""
    options = key_value_options(DemoOptions, argv, "demo")
    if not options.ckpt:
        raise ConfigError("ckpt=CHECKPOINT is required (a training .ckpt or an exported model folder).")
    resolve_device(options.device)
    return options


@dataclass
class DatasetImages:
    """Test images of the checkpoint's dataset with their keypoints (in the images' own frame, ``size``)."""

    image_dir: Path
    size: tuple[int, int]
    names: list[str]
    keypoints: dict[str, np.ndarray]

    def path(self, name: str) -> Path:
        return self.image_dir / name

    def pose(self, name: str) -> Pose:
        return Pose(self.keypoints[name], self.size)


def read_dataset_images(
    data_cfg: dict[str, Any] | None, dataset_root: str | None, limit: int, ckpt: str
) -> tuple[DatasetImages | None, str]:
    """The test split of the data config a checkpoint stores (``dataset_root`` overriding its root), at most
    ``limit`` images evenly spaced; or None and why not, in words."""
    if not data_cfg:
        return None, "The checkpoint stores no data config, so no dataset images are offered."
    data_cfg = dict(data_cfg)
    if dataset_root:
        data_cfg["root"] = dataset_root
    try:
        datamodule = build_datamodule(data_cfg, source=ckpt)
        if not isinstance(datamodule, PoseTransferDataModule):  # e.g. one subject's photos: no test split
            return None, "The checkpoint's data is not a pose-transfer dataset, so no dataset images are offered."
        root, layout, split = Path(datamodule.root), datamodule.layout, datamodule.test_split
        for path in (layout.annotation_path(root, split), layout.pairs_path(root, split)):
            if not path.is_file():
                return None, (
                    f"No dataset images: '{path}' does not exist (the checkpoint's dataset is not at '{root}'; "
                    "give its place with dataset_root=DIR)."
                )
        contents = read_split(root, layout, split)
    except EmcaError as err:
        return None, f"No dataset images: {err}"
    names = [name for name in contents.image_names if (contents.image_dir / name).is_file()]
    if not names:
        return None, f"No dataset images: none of the test images is in '{contents.image_dir}'."
    names = [name for name, _ in select_pairs([(name, name) for name in names], limit, "even")]
    keypoints = {name: contents.annotations[name] for name in names}
    return DatasetImages(contents.image_dir, (layout.height, layout.width), names, keypoints), (
        f"{len(names)} test images of '{root}'."
    )


@dataclass
class Outcome:
    """What the page shows after a click: the images, or None each and a message saying what went wrong."""

    message: str
    ok: bool
    source: Image.Image | None = None  # the source as the model sees it, its skeleton drawn over it
    source_skeleton: Image.Image | None = None
    target_skeleton: Image.Image | None = None
    result: Image.Image | None = None
    sheet: Image.Image | None = None

    def images(self) -> tuple[Image.Image | None, ...]:
        return self.source, self.target_skeleton, self.result, self.sheet

    def shown(self, model_height: int) -> tuple[Image.Image | None, ...]:
        """:meth:`images` as the page shows them: enlarged with nearest-neighbour sampling to at least 256 px
        per picture (a 32x24 model's result is a thumbnail otherwise); the download keeps the model's size."""
        return tuple(None if image is None else enlarged(image, model_height) for image in self.images())


def overlay_skeleton(image: np.ndarray, keypoints: np.ndarray) -> Image.Image:
    """The stick figure of ``keypoints`` drawn over ``image`` (H, W, 3) uint8."""
    skeleton = draw_skeleton(keypoints, image.shape[0], image.shape[1])
    drawn = skeleton.any(axis=2, keepdims=True)
    return Image.fromarray(np.where(drawn, skeleton, image).astype(np.uint8))


@contextlib.contextmanager
def pasted_json(text: str) -> Iterator[Path]:
    """``text`` in a temporary ``.json`` file, for the readers of emca.infer that take a path."""
    with tempfile.TemporaryDirectory(prefix="emca-demo-") as folder:
        path = Path(folder) / "pasted.json"
        path.write_text(text, encoding="utf-8")
        yield path


def page_message(error: EmcaError, names: dict[str, str]) -> str:
    """An error's message with temporary paths replaced by what the page calls them (``names``: path -> name)
    and emca.infer's command-line advice by the page's."""
    message = str(error)
    for path, name in sorted(names.items(), key=lambda item: -len(item[0])):  # longest first: no partial hits
        message = message.replace(path, name)
    for role, advice in GIVE_KEYPOINTS.items():
        message = message.replace(advice, _GIVE_KEYPOINTS_IN_PAGE[role])
    return message


class PoseTransferDemo:
    """The page's logic on plain values: a loaded model, the dataset's test images, and generation."""

    def __init__(self, options: DemoOptions) -> None:
        self.options = options
        self.transfer = Transfer(InferOptions.for_transfer(options))
        self.device = self.transfer.pipeline.device
        self.size = self.transfer.size
        self.dataset, self.dataset_note = read_dataset_images(
            self.transfer.pipeline.data, options.dataset_root, options.dataset_images, str(options.ckpt)
        )
        self._lock = threading.Lock()  # one generation at a time: the routing scale is the model's state

    @property
    def has_adapter(self) -> bool:
        return bool(self.options.adapter)

    def describe(self) -> str:
        adapter = f", adapter '{self.options.adapter}'" if self.has_adapter else ""
        return (
            f"Model '{self.options.ckpt}'{adapter}: {self.size[0]}x{self.size[1]} (height x width) on "
            f"{self.device}. {self.dataset_note}"
        )

    # --- inputs -> the model's inputs (DataError for a bad one) ---

    def source(
        self, mode: str, photo: str | None, keypoints_json: str | None, name: str | None, names: dict[str, str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The framed source image (H, W, 3) and its keypoints in that frame."""
        if mode == DATASET:
            dataset = self._dataset()
            if not name or name not in dataset.keypoints:
                raise DataError("Pick a test image of the dataset as the source (or upload a photo).")
            return self.transfer.framed_source(dataset.path(name), dataset.keypoints[name])
        if mode != PHOTO:
            raise DataError(f"Unknown source choice {mode!r}.")
        if not photo:
            raise DataError("Upload a source photo (or pick a test image of the dataset).")
        path = Path(photo)
        names.setdefault(str(path), path.name)
        if not (keypoints_json or "").strip():
            return self.transfer.framed_source(path, None)
        with pasted_json(keypoints_json) as json_path:
            names[str(json_path)] = PASTED["source"]
            keypoints = source_keypoints(InferOptions(source=str(path), source_pose=str(json_path)))
        return self.transfer.framed_source(path, keypoints)

    def target(
        self, mode: str, photo: str | None, pose_json: str | None, name: str | None, names: dict[str, str]
    ) -> np.ndarray:
        """The target keypoints in the model's frame."""
        if mode == DATASET:
            dataset = self._dataset()
            if not name or name not in dataset.keypoints:
                raise DataError("Pick a pose in the dataset's gallery as the target.")
            return self.transfer.framed_pose(dataset.pose(name), f"the dataset pose of '{name}'")
        if mode == JSON:
            if not (pose_json or "").strip():
                raise DataError("Paste a target pose JSON (or upload one), or choose another kind of target.")
            with pasted_json(pose_json) as json_path:
                names[str(json_path)] = PASTED["target"]
                return self.transfer.target_pose(json_path)
        if mode != PHOTO:
            raise DataError(f"Unknown target choice {mode!r}.")
        if not photo:
            raise DataError("Upload a target photo, or choose a pose JSON or a pose of the dataset as the target.")
        path = Path(photo)
        names.setdefault(str(path), path.name)
        return self.transfer.target_pose(path)

    def _dataset(self) -> DatasetImages:
        if self.dataset is None:
            raise DataError(self.dataset_note)
        return self.dataset

    # --- generation ---

    def generate(self, image: np.ndarray, source_keypoints: np.ndarray, target_keypoints: np.ndarray,
                 scale: float = 1.0) -> Outcome:  # fmt: skip
        """Generate on the model's inputs (see :meth:`source` and :meth:`target`)."""
        if self.has_adapter and not 0.0 <= scale <= 1.0:
            raise DataError(f"The adapter scale must lie in [0, 1], got {scale}.")
        start = time.perf_counter()
        with self._lock:
            if self.has_adapter:
                self.transfer.pipeline.generator.set_routing_scale(scale)
            source, result, generated = self.transfer(image, source_keypoints, target_keypoints)
        seconds = time.perf_counter() - start
        height, width = self.size
        scaled = f" with the adapter at scale {scale:g}" if self.has_adapter else ""
        return Outcome(
            message=f"Generated in {seconds:.2f} s on {self.device}{scaled}.",
            ok=True,
            source=overlay_skeleton(image, source_keypoints),
            source_skeleton=Image.fromarray(draw_skeleton(source_keypoints, height, width)),
            target_skeleton=Image.fromarray(draw_skeleton(target_keypoints, height, width)),
            result=result,
            sheet=self.transfer.sheet(source, source_keypoints, target_keypoints, generated),
        )

    def run(
        self,
        source_mode: str = PHOTO,
        source_photo: str | None = None,
        source_keypoints: str | None = None,
        source_name: str | None = None,
        target_mode: str = JSON,
        target_photo: str | None = None,
        target_json: str | None = None,
        target_name: str | None = None,
        scale: float = 1.0,
    ) -> Outcome:
        """Everything one click does; a user error becomes the Outcome's message, never an exception."""
        names: dict[str, str] = {}
        try:
            image, framed_source = self.source(source_mode, source_photo, source_keypoints, source_name, names)
            target_keypoints = self.target(target_mode, target_photo, target_json, target_name, names)
            return self.generate(image, framed_source, target_keypoints, scale)
        except Exception as error:  # an EmcaError, however wrapped; anything else is a bug: raised
            user_error = find_user_error(error)
            if user_error is None:
                raise
            return Outcome(message=page_message(user_error, names), ok=False)

    # --- helpers of the widgets ---

    def photo_preview(self, photo: str | None) -> tuple[Image.Image | None, str]:
        """An uploaded photo to show, or None and what is wrong with it."""
        if not photo:
            return None, ""
        from emca.data.photo import read_image_uint8

        try:
            return Image.fromarray(read_image_uint8(Path(photo))), ""
        except EmcaError as err:
            return None, page_message(err, {photo: Path(photo).name})

    def dataset_preview(self, name: str | None) -> Image.Image | None:
        """A test image of the dataset with its skeleton."""
        if self.dataset is None or not name or name not in self.dataset.keypoints:
            return None
        with Image.open(self.dataset.path(name)) as image:
            return overlay_skeleton(np.asarray(image.convert("RGB")), self.dataset.keypoints[name])

    def gallery(self) -> list[tuple[Image.Image, str]]:
        """The dataset's poses as (skeleton, image name)."""
        if self.dataset is None:
            return []
        height, width = self.dataset.size
        return [
            (Image.fromarray(draw_skeleton(self.dataset.keypoints[name], height, width)), name)
            for name in self.dataset.names
        ]

    def animation(
        self,
        photo: str | None,
        video: str | None,
        use_example: bool = False,
        person: int = 0,
        side_by_side: bool = True,
        source_pose: str | None = None,
        detectors: Detectors = DETECTORS,
    ) -> tuple[str | None, str, str]:
        """``emca animate`` on an uploaded photo and video (or the bundled example): (the video to show, or None;
        the report as JSON text; the message)."""
        driving = str(EXAMPLE_VIDEO) if use_example else video
        if not photo or not driving:
            return None, "", "Upload a photo of a person and a video of someone moving (or tick the example)."
        out = Path(tempfile.mkdtemp(prefix="emca-demo-")) / "animation.mp4"
        options = AnimateOptions(
            ckpt=self.options.ckpt, adapter=self.options.adapter, source=photo, source_pose=source_pose,
            driving=driving, out=str(out), person=int(person), side_by_side=side_by_side,
            framing=self.options.framing, device=str(self.device), min_visibility=self.options.min_visibility,
            max_parameters=self.options.max_parameters, max_activation_gib=self.options.max_activation_gib,
        )  # fmt: skip
        try:
            report = animate(options, detectors)
        except EmcaError as err:
            return None, "", f"Could not animate: {page_message(err, {photo: 'the photo', driving: 'the video'})}"
        shown = out.with_name("animation_side_by_side.mp4") if side_by_side else out
        message = (
            f"Animated {report['frames']} frames ({report['frames_without_person']} without the person, who holds "
            f"the last pose there); PCKh {report['pose_accuracy']['pckh']:.3f}."
        )
        return str(shown), json.dumps(report, indent=2), message

    def json_file_text(self, path: str | None) -> tuple[str | None, str]:
        """An uploaded pose JSON as text for the JSON box (None to leave the box), and a message."""
        if not path:
            return None, ""
        try:
            read_json(Path(path), "pose JSON")  # the message for a file that is not UTF-8 JSON
            return Path(path).read_text(encoding="utf-8-sig"), ""
        except EmcaError as err:
            return None, page_message(err, {path: Path(path).name})


def markdown_text(text: str) -> str:
    """``text`` shown as written in Markdown: its markup characters (e.g. ``*`` in a pasted value) escaped."""
    return re.sub(r"([\\`*_{}\[\]<>()#+!|~])", r"\\\1", text)


def message_markdown(message: str, ok: bool) -> str:
    return markdown_text(message) if ok else f"**Could not generate.** {markdown_text(message)}"


def import_gradio() -> ModuleType:
    """The ``gradio`` module, or an EmcaError saying how to install it."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the page reports nothing anywhere
    try:
        import gradio
    except ImportError as err:
        raise EmcaError(f"The demo page needs Gradio, which cannot be imported ({err}). Install it with "
                        "pip install 'emca[demo]'.") from err  # fmt: skip
    return gradio


def build_app(options: DemoOptions, demo: PoseTransferDemo | None = None) -> Any:
    """The page (a ``gr.Blocks``) over ``demo`` (loaded from ``options`` when not given); not yet launched."""
    gr = import_gradio()
    demo = demo or PoseTransferDemo(options)
    has_dataset = demo.dataset is not None
    gallery_names = demo.dataset.names if has_dataset else []

    def shown(elem_id: str) -> dict[str, Any]:  # an output image: lossless, already enlarged (Outcome.shown)
        return {"format": "png", "interactive": False, "elem_id": elem_id}

    downloads = Path(tempfile.mkdtemp(prefix="emca-demo-"))
    with gr.Blocks(title="emca pose transfer", analytics_enabled=False) as app:
        gr.Markdown(f"# Pose transfer\n{demo.describe()}")
        with gr.Tab("Pose transfer"):
            with gr.Row():
                with gr.Column():
                    gr.Markdown("## Source")
                    source_mode = gr.Radio(
                        [(label, value) for value, label in SOURCE_MODES if has_dataset or value != DATASET],
                        value=PHOTO,
                        label="Source from",
                        elem_id="source-mode",
                    )
                    source_photo = gr.File(label="Source photo", file_types=["image"], elem_id="source-photo")
                    source_keypoints = gr.Textbox(
                        label="Source keypoints (optional pose JSON in the photo's frame; "
                        "empty: MediaPipe detects them)",
                        lines=3,
                        elem_id="source-keypoints",
                    )
                    source_name = gr.Dropdown(
                        gallery_names, value=None, label="Test image of the dataset", visible=has_dataset,
                        elem_id="source-name",
                    )  # fmt: skip
                    source_preview = gr.Image(label="Source photo", interactive=False, format="png")
                with gr.Column():
                    gr.Markdown("## Target pose")
                    target_mode = gr.Radio(
                        [(label, value) for value, label in TARGET_MODES if has_dataset or value != DATASET],
                        value=PHOTO,
                        label="Target pose from",
                        elem_id="target-mode",
                    )
                    target_photo = gr.File(label="Target photo", file_types=["image"], elem_id="target-photo")
                    target_json = gr.Textbox(
                        label='Target pose JSON ({"keypoints": [[x, y], ...18], "height": H, "width": W}, '
                        "OpenPose, or 18 [x, y])",
                        lines=4,
                        elem_id="target-json",
                    )
                    target_json_file = gr.File(label="or upload a pose JSON", file_types=[".json"],
                                               elem_id="target-json-file")  # fmt: skip
                    target_name = gr.Textbox(label="Pose of the dataset", interactive=False, visible=has_dataset,
                                             elem_id="target-name")  # fmt: skip
                    pose_gallery = gr.Gallery(
                        demo.gallery(), label="Poses of the dataset (click one)", visible=has_dataset, columns=8,
                        allow_preview=False, format="png", height=280, elem_id="pose-gallery",
                    )  # fmt: skip
            scale = gr.Slider(
                0.0, 1.0, value=1.0, step=0.05, label="Adapter scale (0: the base model, 1: as personalised)",
                visible=demo.has_adapter, elem_id="adapter-scale",
            )  # fmt: skip
            button = gr.Button("Generate", variant="primary", elem_id="generate")
            message = gr.Markdown(elem_id="message")
            with gr.Row():
                source_view = gr.Image(label="Source as the model sees it, with its skeleton", **shown("source-view"))
                target_view = gr.Image(label="Target skeleton", **shown("target-view"))
                result_view = gr.Image(label="Result", **shown("result"))
            sheet_view = gr.Image(label="Sheet: source | source pose | target pose | result", **shown("sheet"))
            result_file = gr.File(label="Download the result at the model's size", elem_id="result-file")

        with gr.Tab("Animate"):
            gr.Markdown(
                "A photo's person moving as someone in a video moves (`emca animate`): the video's people are "
                "tracked, `person` picks one (0: the one seen longest), and their pose is smoothed and fitted to "
                "the photo's body. It takes about a fifth of a second a frame on a CPU."
            )
            with gr.Row():
                animate_photo = gr.File(label="Photo of a person", file_types=["image"], elem_id="animate-photo")
                animate_video = gr.File(label="Driving video", file_types=["video"], elem_id="animate-video")
            with gr.Row():
                use_example = gr.Checkbox(
                    label=f"use the example video ({EXAMPLE_VIDEO.name}, pedestrians, from Debian's opencv-doc)",
                    value=False, visible=EXAMPLE_VIDEO.is_file(), elem_id="animate-example",
                )  # fmt: skip
                person = gr.Number(label="person", value=0, minimum=0, precision=0, elem_id="animate-person")
                side_by_side = gr.Checkbox(label="side by side (driving | skeleton | result)", value=True)
            animate_button = gr.Button("Animate", variant="primary", elem_id="animate")
            animate_message = gr.Markdown(elem_id="animate-message")
            animation = gr.Video(label="Result", elem_id="animation")
            animation_report = gr.Code(label="report.json", language="json", elem_id="animate-report")

        def warn(text: str) -> str:
            if text:
                gr.Warning(text)
            return markdown_text(text)

        def uploaded_source(photo: str | None) -> tuple[Any, ...]:
            preview, problem = demo.photo_preview(photo)
            return PHOTO, preview, warn(problem)

        def picked_source(name: str | None) -> tuple[Any, ...]:
            return DATASET, demo.dataset_preview(name)

        def uploaded_json(path: str | None) -> tuple[Any, ...]:
            text, problem = demo.json_file_text(path)
            return JSON, gr.update() if text is None else text, warn(problem)

        def picked_pose(evt: gr.SelectData) -> tuple[Any, ...]:
            return DATASET, gallery_names[evt.index]

        def clicked(*values: Any) -> tuple[Any, ...]:
            outcome = demo.run(*values)
            if not outcome.ok:
                gr.Warning(outcome.message)
                return (*outcome.images(), None, message_markdown(outcome.message, outcome.ok))
            download = downloads / "result.png"  # the result at the model's size, as infer writes it
            atomic_save_image(outcome.result, download)
            return (*outcome.shown(demo.size[0]), str(download), message_markdown(outcome.message, outcome.ok))

        source_photo.upload(uploaded_source, source_photo, [source_mode, source_preview, message])
        source_photo.clear(lambda: None, None, source_preview)
        source_name.input(picked_source, source_name, [source_mode, source_preview])
        source_keypoints.input(lambda: PHOTO, None, source_mode)
        target_photo.upload(lambda: PHOTO, None, target_mode)
        target_json.input(lambda: JSON, None, target_mode)
        target_json_file.upload(uploaded_json, target_json_file, [target_mode, target_json, message])
        pose_gallery.select(picked_pose, None, [target_mode, target_name])

        def animated(*values: Any) -> tuple[Any, ...]:
            video, report, text = demo.animation(*values)
            if video is None:
                gr.Warning(text)
            return video, report, markdown_text(text)

        animate_button.click(
            animated,
            [animate_photo, animate_video, use_example, person, side_by_side],
            [animation, animation_report, animate_message],
        )
        button.click(
            clicked,
            [source_mode, source_photo, source_keypoints, source_name,
             target_mode, target_photo, target_json, target_name, scale],
            [source_view, target_view, result_view, sheet_view, result_file, message],
        )  # fmt: skip
    return app


def main(argv: list[str] | None = None) -> None:
    argv = key_value_arguments(argv, __doc__)
    if argv is None:
        return
    with user_errors():
        options = parse_options(argv)
        import_gradio()  # before the model loads, so a missing extra is said at once
        app = build_app(options)
    where = "on this machine only" if options.host in ("127.0.0.1", "localhost") else "on the network"
    print(f"serving the demo {where} at http://{options.host}:{options.port} (Ctrl-C stops it)")
    app.launch(server_name=options.host, server_port=options.port, max_file_size=MAX_UPLOAD)


if __name__ == "__main__":
    main()
