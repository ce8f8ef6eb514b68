#!/usr/bin/env python
"""Convert an official RetinaMask checkpoint (chengyangfu/retinamask) to a detectron2 checkpoint
of this project's model.

    python scripts/convert_official_weights.py \\
        models/retinanet_mask_R-50-FPN_2x_adjust_std011_ms_model.pth \\
        output/retinamask_R50_FPN_2x_ms_official.pth \\
        --config configs/paper/retinamask_R50_FPN_2x_ms.yaml

The config builds the model the tensors must fit (use the paper config of the same backbone);
trailing KEY VALUE pairs override it. Unknown, missing or mis-shaped tensors stop the conversion
with their list, and nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

import torch  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402

from retinamask_d2 import add_retinamask_config  # noqa: E402
from retinamask_d2.checkpoint import (  # noqa: E402
    OfficialCheckpointError,
    convert_official_state_dict,
    load_official_state_dict,
    to_detectron2_checkpoint,
)

DEFAULT_CONFIG = ROOT / "configs" / "paper" / "retinamask_R50_FPN_2x_ms.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="official checkpoint (.pth)")
    parser.add_argument("output", type=Path, help="detectron2 checkpoint to write (.pth)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="model config")
    parser.add_argument("opts", nargs="*", help="config overrides, KEY VALUE")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = get_cfg()
    add_retinamask_config(cfg)
    cfg.merge_from_file(str(args.config))
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    try:
        converted = convert_official_state_dict(
            load_official_state_dict(args.source),
            model,
            anchor_sizes=cfg.MODEL.ANCHOR_GENERATOR.SIZES,
            aspect_ratios=cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS,
        )
    except OfficialCheckpointError as e:
        print(f"{args.source}: {e}", file=sys.stderr)
        return 1
    checkpoint = to_detectron2_checkpoint(converted, args.source)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, args.output)
    print(
        f"{args.output}: {len(converted)} tensors from {args.source.name} "
        f"(sha256 {checkpoint['source']['sha256']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
