"""Images the predictor and the demo take: every kind of file and array, and every bad one."""

import cv2
import numpy as np
import pytest
from PIL import Image

from retinamask_d2.data.image_io import ImageReadError, read_image, to_uint8_3channel


def _rgb_image() -> np.ndarray:
    image = np.zeros((6, 8, 3), dtype=np.uint8)
    image[:, :4] = (200, 30, 10)  # left half reddish, right half black
    image[2, 5] = (1, 2, 3)
    return image


def test_rgb_png_reads_as_rgb_or_bgr(tmp_path):
    path = tmp_path / "rgb.png"
    Image.fromarray(_rgb_image()).save(path)
    rgb = read_image(path, "RGB")
    bgr = read_image(str(path))  # BGR is the default, as OpenCV and DefaultPredictor
    np.testing.assert_array_equal(rgb, _rgb_image())
    np.testing.assert_array_equal(bgr, _rgb_image()[:, :, ::-1])
    assert bgr.flags.c_contiguous


def test_grayscale_repeats_to_three_channels(tmp_path):
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    Image.fromarray(gray).save(tmp_path / "gray.png")
    image = read_image(tmp_path / "gray.png", "RGB")
    assert image.shape == (6, 8, 3)
    for channel in range(3):
        np.testing.assert_array_equal(image[:, :, channel], gray)


def test_sixteen_bit_grayscale_scales_to_eight_bits(tmp_path):
    values = np.array([[0, 257, 1000], [30000, 65535, 128]], dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), values)
    image = read_image(tmp_path / "deep.png", "RGB")
    # 65535 -> 255 linearly: 257 -> 1, 1000 -> 3.89 -> 4, 30000 -> 116.7 -> 117, 128 -> 0.5 -> 0
    np.testing.assert_array_equal(image[:, :, 0], [[0, 1, 4], [117, 255, 0]])


def test_sixteen_bit_colour_keeps_its_range(tmp_path):
    bgr = np.zeros((2, 2, 3), dtype=np.uint16)
    bgr[..., 2] = 65535  # red in OpenCV's channel order
    bgr[..., 1] = 32896  # half
    cv2.imwrite(str(tmp_path / "deep_rgb.png"), bgr)
    rgb = read_image(tmp_path / "deep_rgb.png", "RGB")
    np.testing.assert_allclose(rgb[0, 0], [255, 128, 0], atol=1)


def test_alpha_is_flattened_onto_white(tmp_path):
    rgba = np.zeros((1, 3, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 0)  # fully transparent: its colour must not show
    rgba[0, 1] = (10, 20, 30, 255)
    rgba[0, 2] = (100, 0, 200, 128)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    image = read_image(tmp_path / "alpha.png", "RGB")
    a = 128 / 255
    half = np.round(np.array([100, 0, 200]) * a + 255 * (1 - a))  # 177, 127, 227
    np.testing.assert_array_equal(image[0], [[255, 255, 255], [10, 20, 30], half])


def test_exif_orientation_is_applied(tmp_path):
    image = np.zeros((20, 40, 3), dtype=np.uint8)
    image[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(image).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    shown = read_image(tmp_path / "rotated.jpg", "RGB")
    assert shown.shape == (40, 20, 3)
    assert shown[:18].mean() > 240 and shown[22:].mean() < 15  # white half now on top


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda p: p.write_text("not pixels"), "not an image file"),
        (lambda p: p.write_bytes(b""), "not an image file"),
        (lambda p: p.mkdir(), "is a folder"),
        (lambda p: None, "no such file"),
    ],
    ids=["text", "empty", "folder", "missing"],
)
def test_unreadable_files_name_the_file_and_the_problem(tmp_path, make, problem):
    path = tmp_path / "photo.jpg"
    make(path)
    with pytest.raises(ImageReadError) as error:
        read_image(path)
    assert str(error.value).startswith(f"{path}: {problem}")


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_files_are_refused(tmp_path, suffix):
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    whole = tmp_path / f"whole{suffix}"
    Image.fromarray(noise).save(whole)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ImageReadError, match=f"^{cut}: truncated or corrupt image data"):
        read_image(cut)


@pytest.mark.parametrize("limit", [1.5, 0.5], ids=["own-check", "pillow-bomb-check"])
def test_images_over_the_pixel_limit_are_refused(tmp_path, limit):
    path = tmp_path / "big.png"
    Image.new("RGB", (2000, 1000)).save(path)  # 2 megapixels
    saved_limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageReadError, match=f"^{path}: .*over the limit of {limit:g} megapixels"):
        read_image(path, max_megapixels=limit)
    assert Image.MAX_IMAGE_PIXELS == saved_limit  # Pillow's global guard is left as it was
    assert read_image(path, max_megapixels=None).shape == (1000, 2000, 3)


def test_float_images_are_refused(tmp_path):
    Image.fromarray(np.ones((4, 4), dtype=np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(ImageReadError, match="32-bit float images are not supported"):
        read_image(tmp_path / "float.tif")


def test_bad_format_name():
    with pytest.raises(ValueError, match="'BGR' or 'RGB'"):
        read_image("x.png", "RGBA")


def test_arrays_of_every_supported_kind():
    gray = np.array([[0, 255], [7, 8]], dtype=np.uint8)
    np.testing.assert_array_equal(to_uint8_3channel(gray)[..., 1], gray)
    np.testing.assert_array_equal(to_uint8_3channel(gray[..., None])[..., 2], gray)
    np.testing.assert_array_equal(to_uint8_3channel(gray.astype(np.int64)), to_uint8_3channel(gray))
    np.testing.assert_array_equal(to_uint8_3channel(gray > 7)[..., 0], [[0, 255], [0, 255]])
    np.testing.assert_array_equal(
        to_uint8_3channel(np.full((1, 1, 3), 65535, np.uint16)), np.full((1, 1, 3), 255)
    )
    bgra = np.array([[[10, 20, 30, 0]]], dtype=np.uint8)  # the 4th channel is alpha in any order
    np.testing.assert_array_equal(to_uint8_3channel(bgra), [[[255, 255, 255]]])


@pytest.mark.parametrize(
    "array, problem",
    [
        (np.zeros((4, 4, 3), np.float32), "dtype float32 is not supported"),
        (np.full((4, 4), 300, np.int32), "values span 300..300"),
        (np.zeros((4, 4, 2), np.uint8), r"got shape \(4, 4, 2\)"),
        (np.zeros((0, 4, 3), np.uint8), "empty image"),
        (np.zeros(5, np.uint8), r"got shape \(5,\)"),
    ],
    ids=["float", "int-range", "two-channels", "empty", "1d"],
)
def test_unsupported_arrays_are_refused_with_their_name(array, problem):
    with pytest.raises(ImageReadError, match=f"^frame 3: .*{problem}"):
        to_uint8_3channel(array, "frame 3")
