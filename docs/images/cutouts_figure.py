"""Make docs/images/cutouts.png, the README's picture, from the demo's own outputs.

    make quickstart   # the model: output/quickstart/
    python demo/demo.py --input datasets/synthetic/val --output out/fig --cutouts --upright
    python docs/images/cutouts_figure.py out/fig datasets/synthetic/val docs/images/cutouts.png

Each row is one validation image: the image, the demo's drawing of the model's predictions, and the
upright cut-outs the demo wrote for it, on a checkerboard where they are transparent. The rows are
the images with the most predicted classes among their cut-outs (ties: file order); nothing comes
from the ground truth. The committed picture: a quickstart run with OMP_NUM_THREADS=1.
"""

import argparse
import re
from pathlib import Path

from PIL import Image

CUTOUT_NAME = re.compile(r"^(?P<image>.+)_(?P<index>\d+)_(?P<cls>.+)_(?P<score>[0-9.]+)\.png$")
ROW_HEIGHT = 192
GAP = 8
CUTOUT_ZOOM = 3.0


def cutouts_by_image(folder: Path) -> dict[str, list[tuple[int, str, Path]]]:
    """The demo's cut-outs grouped by the stem of their image, in detection order."""
    found: dict[str, list[tuple[int, str, Path]]] = {}
    for path in sorted(folder.glob("*.png")):
        match = CUTOUT_NAME.match(path.name)
        if match is None:
            raise ValueError(f"{path}: not named <image>_<index>_<class>_<score>.png")
        stem = Path(match["image"]).stem
        found.setdefault(stem, []).append((int(match["index"]), match["cls"], path))
    return {stem: sorted(items) for stem, items in found.items()}


def checkerboard(size: tuple[int, int], cell: int = 8) -> Image.Image:
    board = Image.new("RGB", size, (255, 255, 255))
    for y in range(0, size[1], cell):
        for x in range((y // cell % 2) * cell, size[0], 2 * cell):
            board.paste((214, 214, 214), (x, y, x + cell, y + cell))
    return board


def scaled(image: Image.Image, height: int) -> Image.Image:
    """Enlarged with square pixels, so that the masks' own pixels show; reduced smoothly."""
    width = max(1, round(image.width * height / image.height))
    smaller = height < image.height
    return image.resize(
        (width, height), Image.Resampling.LANCZOS if smaller else Image.Resampling.NEAREST
    )


def row(image: Path, drawing: Path, cutouts: list[Path]) -> Image.Image:
    """The image, its drawing and its cut-outs side by side, ROW_HEIGHT high."""
    parts = [scaled(Image.open(image).convert("RGB"), ROW_HEIGHT)]
    parts.append(scaled(Image.open(drawing).convert("RGB"), ROW_HEIGHT))
    images = [Image.open(path).convert("RGBA") for path in cutouts]
    # One enlargement for the row's cut-outs, so that they keep their sizes relative to each other.
    factor = min(CUTOUT_ZOOM, ROW_HEIGHT / max(c.height for c in images))
    for cutout in images:
        size = (max(1, round(cutout.width * factor)), max(1, round(cutout.height * factor)))
        cutout = cutout.resize(size, Image.Resampling.NEAREST)
        tile = checkerboard(cutout.size)
        tile.paste(cutout, (0, 0), cutout)
        parts.append(tile)
    width = sum(p.width for p in parts) + GAP * (len(parts) - 1)
    canvas = Image.new("RGB", (width, ROW_HEIGHT), (255, 255, 255))
    x = 0
    for part in parts:
        canvas.paste(part, (x, (ROW_HEIGHT - part.height) // 2))
        x += part.width + GAP
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("demo_output", type=Path, help="the demo's --output folder")
    parser.add_argument("images", type=Path, help="the folder of the images the demo read")
    parser.add_argument("output", type=Path, help="the PNG to write")
    parser.add_argument("--rows", type=int, default=3)
    parser.add_argument("--max-cutouts", type=int, default=6, help="per row")
    args = parser.parse_args()

    groups = cutouts_by_image(args.demo_output / "cutouts")
    if not groups:
        raise SystemExit(f"error: no cut-outs in {args.demo_output / 'cutouts'}")
    chosen = sorted(groups, key=lambda stem: -len({cls for _, cls, _ in groups[stem]}))
    rows = []
    for stem in chosen[: args.rows]:
        (image,) = args.images.glob(f"{stem}.*")
        drawing = args.demo_output / image.name
        paths = [path for _, _, path in groups[stem][: args.max_cutouts]]
        rows.append(row(image, drawing, paths))
    width = max(r.width for r in rows)
    figure = Image.new("RGB", (width, len(rows) * (ROW_HEIGHT + GAP) - GAP), (255, 255, 255))
    for i, r in enumerate(rows):
        figure.paste(r, (0, i * (ROW_HEIGHT + GAP)))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    # 256 colours keep the PNG small enough for a README (well under 300 KB).
    figure.quantize(colors=256).save(args.output, optimize=True)
    print(f"wrote {args.output} from {', '.join(chosen[: args.rows])}")


if __name__ == "__main__":
    main()
