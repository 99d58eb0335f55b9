"""emca.data.photo, the one image reader of training, evaluation, infer and the demo: the files people have
(16-bit, CMYK, transparency, animations, rotated, huge, broken) read right or refused naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emca.data.dataset import load_image
from emca.data.photo import (
    ANIMATED,
    ROTATED,
    TOO_LARGE,
    UNREADABLE,
    ImageFailure,
    image_size,
    read_image,
    read_image_uint8,
)
from emca.metrics.images import read_rgb

RNG = np.random.default_rng(0)


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    samples = RNG.integers(0, 65536, (6, 5)).astype(np.uint16)
    samples[0, 0], samples[0, 1] = 0, 65535
    path = tmp_path / "depth.png"
    Image.fromarray(samples).save(path)  # a 16-bit grayscale PNG (mode I;16)
    expected = samples.astype(np.float64) / 65535
    np.testing.assert_allclose(read_image(path), np.repeat(expected[..., None], 3, axis=2), rtol=1e-6)
    as_uint8 = read_image_uint8(path)
    np.testing.assert_array_equal(as_uint8[..., 0], np.rint(expected * 255).astype(np.uint8))
    assert as_uint8.min() == 0 and as_uint8.max() == 255 and (as_uint8 < 255).mean() > 0.9  # not all white
    # the training loader and the evaluator's reader see the same pixels
    np.testing.assert_allclose(load_image(path, 6, 5).permute(1, 2, 0).numpy(), read_image(path) * 2 - 1, atol=1e-6)
    np.testing.assert_array_equal(read_rgb(path, 6, 5), as_uint8)


def test_cmyk_becomes_rgb_as_pillow_converts_it(tmp_path: Path) -> None:
    cmyk = Image.fromarray(RNG.integers(0, 256, (4, 3, 4)).astype(np.uint8), mode="CMYK")
    path = tmp_path / "print.tiff"
    cmyk.save(path)
    np.testing.assert_array_equal(read_image_uint8(path), np.asarray(cmyk.convert("RGB")))


def test_transparent_pixels_are_laid_over_white(tmp_path: Path) -> None:
    rgba = np.zeros((1, 3, 4), dtype=np.uint8)
    rgba[0, :, :3] = (10, 100, 200)
    rgba[0, :, 3] = (0, 255, 128)  # transparent, opaque, half
    path = tmp_path / "cutout.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    pixels = read_image_uint8(path)[0].astype(int)
    assert pixels[0].tolist() == [255, 255, 255]
    assert pixels[1].tolist() == [10, 100, 200]
    half = 128 / 255
    np.testing.assert_allclose(pixels[2], np.array([10, 100, 200]) * half + 255 * (1 - half), atol=1)


def test_animation_rotation_and_size_limit_are_refused_naming_the_file(tmp_path: Path, monkeypatch) -> None:
    frames = [Image.new("RGB", (4, 4), colour) for colour in ("red", "blue")]
    animated = tmp_path / "walk.gif"
    frames[0].save(animated, save_all=True, append_images=frames[1:])
    rotated = tmp_path / "sideways.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (4, 4)).save(rotated, exif=exif)
    cases = {animated: (ANIMATED, "animation of 2 frames"), rotated: (ROTATED, "EXIF orientation")}
    for path, (reason, text) in cases.items():
        with pytest.raises(ImageFailure) as error:
            read_image(path)
        assert error.value.reason == reason and str(path) in str(error.value) and text in str(error.value)

    large = tmp_path / "large.png"
    Image.new("RGB", (40, 40)).save(large)
    # 1,600 pixels: over twice the limit (Pillow's error), and between the limit and twice it (Pillow only warns)
    for limit in (500, 1000):
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        for reader in (read_image, read_image_uint8, image_size):
            with pytest.raises(ImageFailure) as error:
                reader(large)
            assert error.value.reason == TOO_LARGE and str(large) in str(error.value)


def test_missing_and_broken_files_are_unreadable(tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    Image.new("RGB", (32, 32), "green").save(broken)
    broken.write_bytes(broken.read_bytes()[:60])
    for path, text in ((tmp_path / "none.png", "does not exist"), (broken, "cannot decode")):
        with pytest.raises(ImageFailure) as error:
            read_image_uint8(path)
        assert error.value.reason == UNREADABLE and str(path) in str(error.value) and text in str(error.value)
