"""The oriented thin benchmark's harness (``benchmarks.thin.oriented --quick``): each run keeps
its own row, the results file is rebuilt from all rows (so seeds can run in parallel processes),
every model starts from the same pretrained backbone, and the RetinaMask rows differ only in
``MASK_ROI``. No accuracy is asserted: three iterations learn nothing."""

import json
import subprocess
import sys

from benchmarks import report
from benchmarks.thin.oriented import VARIANTS, variant_keys
from tests.common import REPO_ROOT


def test_variants_share_the_backbone_and_differ_only_in_their_own_keys():
    box, oriented = variant_keys("retinamask_box"), variant_keys("retinamask_oriented")
    assert {k: v for k, v in oriented.items() if k != "MODEL.RETINAMASK.MASK_ROI"} == box
    assert oriented["MODEL.RETINAMASK.MASK_ROI"] == "oriented"
    for variant in VARIANTS:
        keys = variant_keys(variant)
        assert keys["MODEL.WEIGHTS"] == "imagenet://MobileNetV2"
        assert keys["MODEL.BACKBONE.NAME"] == box["MODEL.BACKBONE.NAME"]
    assert variant_keys("retinamask_box")["MODEL.RETINAMASK.MASK_DICE_WEIGHT"] > 0  # the default
    assert "MODEL.RETINAMASK.MASK_DICE_WEIGHT" not in variant_keys("mask_rcnn")


def _run(work_dir, *variants):
    command = [sys.executable, "-m", "benchmarks.thin.oriented", "--quick", "--seeds", "0"]
    command += ["--work-dir", str(work_dir), "--variants", *variants]
    subprocess.run(command, check=True, cwd=REPO_ROOT, capture_output=True)
    return json.loads((work_dir / "quick" / "thin_oriented.json").read_text())


def test_quick_runs_in_two_processes_end_in_one_results_file(tmp_path):
    _run(tmp_path, "retinamask_oriented")
    result = _run(tmp_path, "retinamask_box")  # the second process finds the first's row
    assert [r["variant"] for r in result["rows"]] == ["retinamask_box", "retinamask_oriented"]
    for row in result["rows"]:
        assert set(row["thin_by_angle"]) == {"0-10", "10-30", "30-45", "all"}
        assert row["thin_by_angle"]["all"]["objects"] == sum(
            row["thin_by_angle"][b]["objects"] for b in ("0-10", "10-30", "30-45")
        )
        assert "thin_AP" in row["box"]  # masks only where a 3-step model finds anything
    assert result["data"]["layout"]["sides"] == [192, 224]
    text = report.thin_oriented_markdown(result)
    assert "| RetinaMask, oriented mask RoIs | 1 |" in text
    # A finished run is not trained again: the row file stays as it was.
    row_file = tmp_path / "quick" / "seed0" / "retinamask_box" / "row.json"
    before = row_file.read_bytes()
    _run(tmp_path, "retinamask_box")
    assert row_file.read_bytes() == before
