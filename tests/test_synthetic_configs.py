"""The small synthetic configs inherit as detectron2's do: the instant test derives from the real
quickstart config, which derives from the base of the small synthetic setting; each file changes
only what its name says (a schedule, an output folder)."""

import yaml
from detectron2.config import CfgNode, get_cfg

from retinamask_d2 import add_retinamask_config
from tests.common import CONFIGS_DIR, INSTANT_CONFIG

BASE = CONFIGS_DIR / "quickstart" / "Base-RetinaMask-R18-synthetic.yaml"
QUICKSTART = CONFIGS_DIR / "quickstart" / "retinamask_R18_synthetic.yaml"
SCHEDULE = {f"SOLVER.{k}" for k in ("BASE_LR", "MAX_ITER", "STEPS", "WARMUP_ITERS")}


def _flat(cfg: CfgNode, prefix: str = "") -> dict:
    out = {}
    for key, value in cfg.items():
        if isinstance(value, CfgNode):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _resolved(path) -> dict:
    cfg = get_cfg()
    add_retinamask_config(cfg)
    cfg.merge_from_file(str(path))
    return _flat(cfg)


def _changed(a: dict, b: dict) -> set[str]:
    return {k for k in a if a[k] != b[k]}


def test_instant_test_derives_from_the_quickstart_which_derives_from_the_base():
    chain = [INSTANT_CONFIG, QUICKSTART, BASE]
    for child, parent in zip(chain, chain[1:]):
        base = yaml.safe_load(child.read_text())["_BASE_"]
        assert (child.parent / base).resolve() == parent.resolve(), child.name
    assert yaml.safe_load(BASE.read_text())["_BASE_"] == "../Base-RetinaMask.yaml"


def test_each_config_changes_only_its_schedule_and_output_folder():
    base, quickstart, instant = map(_resolved, (BASE, QUICKSTART, INSTANT_CONFIG))
    assert _changed(instant, quickstart) == SCHEDULE | {"SOLVER.CHECKPOINT_PERIOD", "OUTPUT_DIR"}
    assert instant["SOLVER.MAX_ITER"] == 40 and instant["OUTPUT_DIR"] == "./output"
    assert quickstart["SOLVER.MAX_ITER"] == 1200 and quickstart["SOLVER.BASE_LR"] == 0.03
    # The base has no schedule of its own: Base-RetinaMask's (COCO's) until a real config sets one.
    assert _changed(quickstart, base) == SCHEDULE | {
        "SOLVER.CHECKPOINT_PERIOD",
        "SOLVER.IMS_PER_BATCH",
        "OUTPUT_DIR",
    }
    assert base["SOLVER.MAX_ITER"] == 90000 and base["MODEL.RESNETS.DEPTH"] == 18
