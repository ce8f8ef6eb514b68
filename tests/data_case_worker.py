"""Runs COCO-format datasets one after another under a memory limit: each is checked, loaded and
trained for one step with a tiny RetinaMask; the outcome of each goes back as one line.

Used by tests/test_data_properties.py as a subprocess (``python -m tests.data_case_worker
LIMIT_MB``): torch and detectron2 are imported once, then every line read from stdin names a
case (``{"json": ..., "images": ..., "output": ...}``) and gets one ``RESULT_MARK`` line back:
``{"outcome": "trained" | "refused" | "crashed", "type": ..., "message": ...}``.
"""

from __future__ import annotations

import json
import resource
import sys
import traceback
import uuid

RESULT_MARK = "@@case-result@@ "


def _address_space_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_case(case: dict) -> dict:
    from retinamask_d2.data.coco_json import CocoJsonError
    from retinamask_d2.data.image_io import ImageReadError
    from retinamask_d2.data.user_datasets import setup_datasets
    from retinamask_d2.engine import Trainer
    from tests.common import get_tiny_cfg

    cfg = get_tiny_cfg(num_classes=2)
    name = f"case_{uuid.uuid4().hex[:8]}"
    cfg.DATASETS.COCO_JSON = ((name, case["json"], case["images"]),)
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (name,), ()
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (64,), 64
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.MAX_ITER = 1
    cfg.SOLVER.CHECKPOINT_PERIOD = 1000
    cfg.OUTPUT_DIR = case["output"]
    try:
        setup_datasets(cfg)
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()
    except (CocoJsonError, ImageReadError) as e:
        return {"outcome": "refused", "type": type(e).__name__, "message": str(e)}
    except MemoryError:
        return {"outcome": "crashed", "type": "MemoryError", "message": traceback.format_exc()}
    except Exception as e:
        return {"outcome": "crashed", "type": type(e).__name__, "message": traceback.format_exc()}
    return {"outcome": "trained", "type": "", "message": ""}


def main() -> None:
    import torch  # noqa: F401  (imported before the limit: its libraries map much address space)

    import retinamask_d2.engine  # noqa: F401

    limit_mb = float(sys.argv[1])
    limit = int((_address_space_mb() + limit_mb) * 2**20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    torch.set_num_threads(1)
    for line in sys.stdin:
        result = run_case(json.loads(line))
        print(RESULT_MARK + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
