"""
`python -m retinamask_d2.env`: what this environment runs on.

Prints the versions of Python, torch, torchvision and detectron2, how detectron2 was installed
(the route recorded by scripts/provision_detectron2.py; route a for a detectron2 it did not
install) and whether its compiled extension `detectron2._C` is present (without it the
pure-Python parts RetinaMask uses still work).
"""

from __future__ import annotations

import importlib.util
import json
import platform
import sys
from pathlib import Path

ROUTE_FILE = Path(sys.prefix) / "share" / "retinamask_d2" / "detectron2_route.json"
ROUTE_NAMES = {
    "a": "a (kept the detectron2 that was already installed)",
    "b": "b (official detectron2 built from source)",
    "c": "c (patched PyPI sdist pb1-detectron2==0.6, pure Python)",
}


def detectron2_route(location: str, route_file: Path = ROUTE_FILE) -> dict:
    """
    How the detectron2 at `location` was installed.

    The provisioning record describes it only if it names that location: a detectron2 the user
    installed (with no record, or over one) is what the provisioning script keeps as route a.
    """
    try:
        record = json.loads(route_file.read_text())
    except (OSError, ValueError):
        record = {}
    if record.get("location") == location:
        return record
    return {"route": "a", "source": "installed outside scripts/provision_detectron2.py"}


def has_c_extension() -> bool:
    try:
        return importlib.util.find_spec("detectron2._C") is not None
    except ImportError:
        return False


def collect() -> dict[str, str]:
    import detectron2
    import torch
    import torchvision

    location = str(Path(detectron2.__file__).parent)
    route = detectron2_route(location)
    rows = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "CUDA available": str(torch.cuda.is_available()),
        "detectron2": f"{detectron2.__version__} @ {location}",
        "detectron2 route": ROUTE_NAMES.get(route["route"], route["route"]),
        "detectron2 source": route["source"],
        "detectron2._C": "present" if has_c_extension() else "absent (pure-Python install)",
    }
    if route.get("patches"):
        rows["detectron2 patches"] = ", ".join(route["patches"])
    return rows


def main() -> None:
    rows = collect()
    width = max(len(k) for k in rows)
    for key, value in rows.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
