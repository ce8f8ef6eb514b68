"""Mask pasting on the CPU: detectron2's ``paste_masks_in_image`` (one mask at a time) against
:func:`paste_masks_one_pass` (all of an image's masks in one pass), the candidate that lost.

    python benchmarks/paste_cost.py --threads 1

Random 28 x 28 probabilities in random boxes, at the synthetic set's scale (128 x 128 images,
boxes of 15-90 px) and at COCO's (800 x 1333, box sides log-uniform in 16-512 px), for a few
mask counts. Both functions run on the same inputs, taking turns; the fastest of ``--iters``
calls is reported, and whether their masks are equal. Writes
``benchmarks/results/paste_cost.json``.
"""

import argparse
import math
import time
from functools import partial
from pathlib import Path

import torch
from detectron2.layers.mask_ops import paste_masks_in_image
from harness import RESULTS_DIR, environment, load_average, set_threads, write_json
from torch import Tensor

SCALES = {  # name: (image height, width, smallest and largest box side)
    "synthetic_128": (128, 128, 15, 90),
    "coco_800x1333": (800, 1333, 16, 512),
}
MASK_COUNTS = (5, 50, 100)
MASK_SIZE = 28


def random_case(scale: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """``n`` random mask probabilities and boxes (log-uniform sides) inside the image."""
    height, width, lo, hi = SCALES[scale]
    g = torch.Generator().manual_seed(seed)
    sides = torch.exp(math.log(lo) + torch.rand(n, 2, generator=g) * math.log(hi / lo))
    sides = torch.minimum(sides, torch.tensor([float(width), float(height)]))
    corner = torch.rand(n, 2, generator=g) * (torch.tensor([width, height]) - sides)
    boxes = torch.cat([corner, corner + sides], dim=1)
    return torch.rand(n, MASK_SIZE, MASK_SIZE, generator=g), boxes, (height, width)


def paste_masks_one_pass(
    masks: Tensor, boxes: Tensor, image_shape: tuple[int, int], threshold: float = 0.5
) -> Tensor:
    """The (N, H, W) bool masks of ``masks`` (N, M, M) probabilities pasted into ``boxes`` (N, 4,
    XYXY, in the H x W image): detectron2's ``paste_masks_in_image`` masks, up to float rounding
    (pixels whose probability is the threshold to within rounding may differ).

    detectron2 pastes on the CPU one mask at a time (a ``grid_sample`` call each, on the
    pixels of the mask's box and a one-pixel border). This samples every mask's pixels in a
    single pass instead, to pay the per-call overhead once: the pixels of all boxes are listed
    together and each interpolates its four neighbours in its own mask as ``grid_sample`` does
    (zero padding, ``align_corners=False``).
    """
    height, width = int(image_shape[0]), int(image_shape[1])
    n, m = masks.shape[0], masks.shape[-1]
    if masks.shape[-2] != m:
        raise ValueError(f"masks must be square, got {tuple(masks.shape)}")
    out = torch.zeros((n, height, width), dtype=torch.bool, device=masks.device)
    if n == 0:
        return out
    boxes = boxes.float()
    # The pixels detectron2 samples for a box: its integer hull and one pixel around it.
    x0i = (boxes[:, 0].floor() - 1).clamp(min=0).long()
    y0i = (boxes[:, 1].floor() - 1).clamp(min=0).long()
    x1i = (boxes[:, 2].ceil() + 1).clamp(max=width).long()
    y1i = (boxes[:, 3].ceil() + 1).clamp(max=height).long()
    w, h = (x1i - x0i).clamp(min=0), (y1i - y0i).clamp(min=0)
    counts = w * h
    owner = torch.repeat_interleave(torch.arange(n, device=masks.device), counts)
    starts = torch.cumsum(counts, 0) - counts
    k = torch.arange(owner.numel(), device=masks.device) - starts[owner]
    py, px = y0i[owner] + k // w[owner], x0i[owner] + k % w[owner]

    # The grid coordinates in [-1, 1] exactly as detectron2's _do_paste_mask computes them, then
    # unnormalized as grid_sample does.
    b = boxes[owner]
    gx = (px.float() + 0.5 - b[:, 0]) / (b[:, 2] - b[:, 0]) * 2 - 1
    gy = (py.float() + 0.5 - b[:, 1]) / (b[:, 3] - b[:, 1]) * 2 - 1
    # Clamped to [-1, m] (outside it both neighbours are padding: the value stays 0).
    ix = (gx * (m / 2) + (m - 1) / 2).clamp(-1, m)
    iy = (gy * (m / 2) + (m - 1) / 2).clamp(-1, m)
    ix0, iy0 = ix.floor(), iy.floor()
    east, south = ix - ix0, iy - iy0
    west, north = 1 - east, 1 - south

    # Each mask with a zero border: index i of the mask is i + 1 here, for i in [-1, m + 1].
    padded = torch.nn.functional.pad(masks.float(), (1, 2, 1, 2)).reshape(n, -1)
    stride = m + 3
    base = (iy0.long() + 1) * stride + ix0.long() + 1
    flat = padded.reshape(-1)
    offset = owner * (stride * stride) + base
    value = (
        flat[offset] * (north * west)
        + flat[offset + 1] * (north * east)
        + flat[offset + stride] * (south * west)
        + flat[offset + stride + 1] * (south * east)
    )
    keep = value >= threshold
    out.view(-1)[(owner * (height * width) + py * width + px)[keep]] = True
    return out


def call_ms(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iters", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "paste_cost.json")
    args = parser.parse_args()
    set_threads(args.threads)
    load_before = load_average()
    rows = []
    for scale in SCALES:
        for n in MASK_COUNTS:
            masks, boxes, shape = random_case(scale, n, seed=n)
            reference = paste_masks_in_image(masks, boxes, shape)
            differ = int((reference != paste_masks_one_pass(masks, boxes, shape)).sum())
            calls = {
                "detectron2_ms": partial(paste_masks_in_image, masks, boxes, shape),
                "one_pass_ms": partial(paste_masks_one_pass, masks, boxes, shape),
            }
            times = {name: math.inf for name in calls}
            for _ in range(args.iters):  # taking turns: load that comes and goes hits both
                for name, fn in calls.items():
                    times[name] = min(times[name], call_ms(fn))
            row = {
                "scale": scale,
                "masks": n,
                "pixels_differing": differ,
                "pixels_set": int(reference.sum()),
                **times,
            }
            row["detectron2_over_one_pass"] = times["detectron2_ms"] / times["one_pass_ms"]
            rows.append(row)
            print(row, flush=True)
    write_json(
        args.out,
        {
            "benchmark": "paste_cost",
            "threads": args.threads,
            "iters": args.iters,
            "statistic": "fastest call, ms",
            "mask_size": MASK_SIZE,
            "load_average_before": load_before,
            "load_average_after": load_average(),
            "environment": environment(),
            "rows": rows,
        },
    )
    print(f"paste_cost: wrote {args.out}")


if __name__ == "__main__":
    main()
