"""Cost of the image check that runs before training (headers only: format, size, EXIF
orientation), per 1,000 images, next to the cost of decoding the same images.

    python -m benchmarks.timing.image_precheck   # writes benchmarks/results/image_precheck.json

The images are written first (JPEG photos-like noise and PNG, 640x480) and read once before
timing, so the numbers are those of files in the OS page cache, as in a second run over a
dataset; a cold disk adds its own seek time to both.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.harness import RESULTS_DIR, device_description, environment
from retinamask_d2.data.coco_json import _check_images
from retinamask_d2.data.image_io import read_image

WIDTH, HEIGHT = 640, 480


def write_images(folder: Path, count: int) -> list[dict]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    images = []
    for i in range(count):
        name = f"{i:05d}.{'jpg' if i % 2 else 'png'}"
        Image.fromarray(np.roll(base, i, axis=1)).save(folder / name)
        images.append({"id": i + 1, "file_name": name, "width": WIDTH, "height": HEIGHT})
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        images = write_images(folder, args.images)
        for image in images:  # into the page cache
            (folder / image["file_name"]).read_bytes()
        header_s = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            _check_images("bench.json", str(folder), images)
            header_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        for image in images:
            read_image(folder / image["file_name"])
        decode_s = time.perf_counter() - start
    per_1000 = 1000 / args.images
    result = {
        "images": args.images,
        "image_size": [WIDTH, HEIGHT],
        "formats": "half JPEG, half PNG",
        "header_check_seconds_per_1000": round(min(header_s) * per_1000, 3),
        "full_decode_seconds_per_1000": round(decode_s * per_1000, 3),
        "repeats": args.repeats,
        "machine": device_description("cpu"),
        "environment": environment(),
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "image_precheck.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
