"""Reading images from files or arrays into the 8-bit, 3-channel arrays a detector takes.

detectron2's ``read_image`` clips 16-bit images to 255 (a 16-bit grayscale PNG comes out all
white) and keeps the colour that an RGBA image stores under fully transparent pixels (often
black or junk), and its errors do not say which file failed or why. This module scales 16-bit
data, flattens alpha onto white (what an image viewer shows) and turns every failure into an
:class:`ImageReadError` whose message names the file and the problem.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from detectron2.data.transforms import ResizeShortestEdge
from PIL import Image, ImageOps, UnidentifiedImageError

# Suffixes taken from a folder given as input; files named explicitly are tried whatever their name.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")

# The defaults of INPUT.MAX_IMAGE_MEGAPIXELS and INPUT.MIN_IMAGE_SIDE (see SizeLimits).
DEFAULT_MAX_MEGAPIXELS = 64.0
DEFAULT_MIN_SIDE = 8

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
FLOAT_IMAGES_REFUSED = "32-bit float images are not supported; save as 8 or 16 bit"
EXIF_ORIENTATION = 0x0112
# EXIF orientations that swap width and height (rotations by 90 degrees, transpositions).
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


class ImageReadError(ValueError):
    """An image that cannot be used; the message names the file (or array) and what is wrong."""


def read_image(
    path: str | os.PathLike,
    format: str = "BGR",
    max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS,
) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 array in ``format`` ("BGR" or "RGB").

    Applies the EXIF orientation; grayscale is repeated to 3 channels, 16-bit data is scaled to
    8 bits, alpha is flattened onto white. Images over ``max_megapixels`` (None: no limit) are
    refused before their pixels are decoded.
    """
    check_format(format)
    path = Path(path)
    with (
        _named_errors(path, max_megapixels),
        _pixel_limit(max_megapixels),
        Image.open(path) as image,
    ):
        _check_size(image.size, max_megapixels, path)
        image.load()
        rgb = pil_to_rgb(ImageOps.exif_transpose(image), str(path))
    return rgb if format == "RGB" else np.ascontiguousarray(rgb[:, :, ::-1])


@dataclass(frozen=True)
class SizeLimits:
    """The image sizes training, evaluation, the predictor and the demo accept: one policy, read
    from the config (``INPUT.MAX_IMAGE_MEGAPIXELS``, ``INPUT.MIN_IMAGE_SIDE``).

    Larger images are refused rather than downscaled: results stay in the file's own pixel
    coordinates (a downscaled image would give COCO boxes and masks that silently do not match
    the file), and the full-size masks of up to 100 detections grow with the image. An image
    must keep ``min_side`` pixels on each side as stored and after the model's resize (a
    7x1000 strip resized to a 96-pixel long side has no rows left, and the resize fails).
    """

    max_megapixels: float | None  # None: no limit
    min_side: int
    short_edge: int  # the smallest shorter side the resize may choose; 0: no resize
    max_size: int  # the resize's cap on the longer side
    resize_keys: str  # the config keys of the resize, for messages

    @classmethod
    def from_config(cls, cfg, training: bool) -> SizeLimits:
        """The limits of ``cfg`` for training (the smallest training scale) or testing; a config
        without RetinaMask's keys (another detectron2 model) gets their defaults."""
        split = "TRAIN" if training else "TEST"
        short = cfg.INPUT[f"MIN_SIZE_{split}"]
        if training:
            short = min(short) if cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING == "choice" else short[0]
        max_megapixels = cfg.INPUT.get("MAX_IMAGE_MEGAPIXELS", DEFAULT_MAX_MEGAPIXELS)
        return cls(
            max_megapixels=max_megapixels if max_megapixels > 0 else None,
            min_side=int(cfg.INPUT.get("MIN_IMAGE_SIDE", DEFAULT_MIN_SIDE)),
            short_edge=int(short),
            max_size=int(cfg.INPUT[f"MAX_SIZE_{split}"]),
            resize_keys=f"INPUT.MIN_SIZE_{split} / MAX_SIZE_{split}",
        )

    def problem(self, width: int, height: int) -> str:
        """What is wrong with an image of this size, or "" when it is accepted."""
        shown = f"{width}x{height}"
        too_large = _megapixel_problem(width, height, self.max_megapixels)
        if too_large:
            return too_large
        if min(width, height) < self.min_side:
            return (
                f"{shown} is under INPUT.MIN_IMAGE_SIDE {self.min_side} pixels on a side; "
                "the model cannot use such a narrow image"
            )
        if self.short_edge > 0:
            new_h, new_w = ResizeShortestEdge.get_output_shape(
                height, width, self.short_edge, self.max_size
            )
            if min(new_w, new_h) < self.min_side:
                return (
                    f"{shown} is resized to {new_w}x{new_h} ({self.resize_keys} "
                    f"{self.short_edge} / {self.max_size}), under INPUT.MIN_IMAGE_SIDE "
                    f"{self.min_side} pixels on a side; cut it into less elongated pieces"
                )
        return ""

    def check(self, width: int, height: int, name: str) -> None:
        """Raise :class:`ImageReadError` naming ``name`` when the size is refused."""
        problem = self.problem(width, height)
        if problem:
            raise ImageReadError(f"{name}: {problem}")


def to_uint8_3channel(image: np.ndarray, name: str = "image") -> np.ndarray:
    """An (H, W, 3) uint8 copy of an image array, keeping its channel order.

    Takes (H, W), (H, W, 1), (H, W, 3) and (H, W, 4) arrays (the 4th channel is alpha, flattened
    onto white) of dtype uint8, uint16 (scaled to 8 bits), bool, or other integers within 0-255.
    Floats are refused: 0-1 and 0-255 floats cannot be told apart.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ImageReadError(
            f"{name}: expected an (H, W), (H, W, 3) or (H, W, 4) array, got shape {image.shape}"
            + channels_first_hint(image.shape)
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageReadError(f"{name}: empty image of shape {image.shape}")
    image = _to_uint8(image, name)
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.shape[2] == 4:
        return _flatten_alpha(image)
    return np.ascontiguousarray(image)


def channels_first_hint(shape: tuple[int, ...]) -> str:
    """A hint for arrays that may be (C, H, W), as torch and some readers give them."""
    if len(shape) == 3 and shape[0] in (1, 3, 4):
        return "; if it is (C, H, W), pass array.transpose(1, 2, 0)"
    return ""


def _to_uint8(image: np.ndarray, name: str) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255
    if image.dtype == np.uint16:
        return np.round(image / 257.0).astype(np.uint8)
    if np.issubdtype(image.dtype, np.integer):
        if image.min() >= 0 and image.max() <= 255:
            return image.astype(np.uint8)
        raise ImageReadError(
            f"{name}: {image.dtype} values span {image.min()}..{image.max()}; pass uint8 (0-255) "
            "or uint16 (0-65535)"
        )
    raise ImageReadError(f"{name}: dtype {image.dtype} is not supported; pass uint8 or uint16")


def _flatten_alpha(image: np.ndarray) -> np.ndarray:
    alpha = image[:, :, 3:].astype(np.float32) / 255.0
    flat = image[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.round(flat).astype(np.uint8)


def pil_to_rgb(image: Image.Image, name: str = "image") -> np.ndarray:
    """An (H, W, 3) uint8 RGB array of a PIL image (16-bit scaled, alpha flattened onto white);
    the EXIF orientation is not applied here (``read_image`` does, from the file)."""
    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image)
        if values.min() < 0 or values.max() > 65535:
            raise ImageReadError(
                f"{name}: {image.mode} pixel values {values.min()}..{values.max()} do not fit "
                "16 bits; only 8- and 16-bit images are supported"
            )
        return to_uint8_3channel(values.astype(np.uint16), name)
    if image.mode == "F":
        raise ImageReadError(f"{name}: {FLOAT_IMAGES_REFUSED}")
    has_alpha = "A" in image.mode or "transparency" in image.info
    return to_uint8_3channel(np.asarray(image.convert("RGBA" if has_alpha else "RGB")), name)


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says, without decoding its pixels."""

    format: str  # Pillow's format name, e.g. "JPEG"
    mode: str  # Pillow's mode, e.g. "RGB", "I;16"
    stored_size: tuple[int, int]  # (width, height) as stored in the file
    orientation: int  # EXIF orientation tag, 1 when there is none

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) as :func:`read_image` returns it, i.e. after the EXIF rotation."""
        width, height = self.stored_size
        return (height, width) if self.orientation in _TRANSPOSING_ORIENTATIONS else (width, height)


def read_header(path: str | os.PathLike) -> ImageHeader:
    """The header of an image file (format, mode, size, EXIF orientation), read without decoding
    the pixels, so that a whole dataset can be checked before training; raises
    :class:`ImageReadError` for what :func:`read_image` would refuse from the header alone.
    Truncated pixel data is only found by decoding, i.e. by :func:`read_image`."""
    path = Path(path)
    with _named_errors(path, None), _pixel_limit(None), Image.open(path) as image:
        if image.mode == "F":
            raise ImageReadError(f"{path}: {FLOAT_IMAGES_REFUSED}")
        return ImageHeader(image.format or "", image.mode, image.size, _orientation(image))


def _orientation(image: Image.Image) -> int:
    # Pillow's getexif() decodes a whole PNG when its EXIF is not in the header; the header's
    # EXIF (JPEG APP1, WebP, PNG eXIf before the pixels) or TIFF tags are enough here.
    if image.format == "TIFF":
        return int(image.getexif().get(EXIF_ORIENTATION, 1))
    raw = image.info.get("exif")
    if not raw:
        return 1
    exif = Image.Exif()
    exif.load(raw)
    return int(exif.get(EXIF_ORIENTATION, 1))


@contextlib.contextmanager
def _named_errors(path: Path, max_megapixels: float | None) -> Iterator[None]:
    """Turn what Pillow and the OS raise for ``path`` into an :class:`ImageReadError` naming it."""
    try:
        yield
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageReadError(f"{path}: is a folder, not an image file") from None
    except PermissionError:
        raise ImageReadError(f"{path}: permission denied") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file (Pillow cannot identify it)") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{path}: {_too_large_message(max_megapixels)} ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageReadError(f"{path}: truncated or corrupt image data ({e})") from None


def check_format(format: str) -> None:
    """Raise ValueError unless ``format`` is "BGR" or "RGB"."""
    if format not in ("BGR", "RGB"):
        raise ValueError(f"format must be 'BGR' or 'RGB', got {format!r}")


def _check_size(size: tuple[int, int], max_megapixels: float | None, path: Path) -> None:
    problem = _megapixel_problem(*size, max_megapixels)
    if problem:
        raise ImageReadError(f"{path}: {problem}")


def _megapixel_problem(width: int, height: int, max_megapixels: float | None) -> str:
    if max_megapixels is None or width * height <= max_megapixels * 1e6:
        return ""
    return (
        f"{width}x{height} ({width * height / 1e6:.3g} MP) is {_too_large_message(max_megapixels)}"
    )


def _too_large_message(max_megapixels: float | None) -> str:
    return (
        f"over the limit of {max_megapixels:g} megapixels; downscale it, or raise the limit "
        "(INPUT.MAX_IMAGE_MEGAPIXELS; demo: --max-megapixels) if memory allows"
    )


@contextlib.contextmanager
def _pixel_limit(max_megapixels: float | None) -> Iterator[None]:
    """Make Pillow's decompression-bomb guard follow ``max_megapixels`` while reading one file.

    Pillow warns above ``Image.MAX_IMAGE_PIXELS`` and refuses above twice that; our own limit is
    checked from the header, so Pillow's is set to match it (or lifted when there is none).
    """
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None if max_megapixels is None else int(max_megapixels * 1e6)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved
