"""The package installs with its configs, and the environment report names the detectron2 route."""

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import detectron2
import torch

from retinamask_d2.env import detectron2_route

REPO = Path(__file__).resolve().parent.parent


def test_wheel_ships_package_and_configs(tmp_path):
    src = tmp_path / "src"
    for folder in ("retinamask_d2", "configs"):
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "README.md"):
        shutil.copy(REPO / name, src / name)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*cmd, "-w", str(tmp_path / "dist"), str(src)], check=True)
    (wheel,) = (tmp_path / "dist").glob("retinamask_d2-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("*.yaml")}
    assert configs, "configs/ holds no yaml"
    assert {"retinamask_d2/" + c for c in configs} <= names
    assert {"retinamask_d2/__init__.py", "retinamask_d2/env.py"} <= names


def test_env_report_names_versions_and_route():
    cmd = [sys.executable, "-m", "retinamask_d2.env"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in out.splitlines())
    assert rows["torch"] == torch.__version__
    assert rows["detectron2"].startswith(detectron2.__version__ + " @ ")
    assert rows["detectron2 route"][0] in "abc"
    assert rows["detectron2._C"].split()[0] in {"present", "absent"}


def test_env_route_is_a_unless_the_record_names_this_detectron2(tmp_path):
    record_file = tmp_path / "detectron2_route.json"
    here = "/env/site-packages/detectron2"
    # No record: a detectron2 the user installed, which the provisioning script keeps (route a).
    assert detectron2_route(here, record_file)["route"] == "a"
    record = {"route": "c", "source": "sdist", "patches": ["0001-x.patch"], "location": here}
    record_file.write_text(json.dumps(record))
    assert detectron2_route(here, record_file) == record
    # A record of another detectron2 (the user installed theirs over it) does not describe this one.
    assert detectron2_route("/elsewhere/detectron2", record_file)["route"] == "a"
