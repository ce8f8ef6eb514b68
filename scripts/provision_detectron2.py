#!/usr/bin/env python
"""
Install detectron2 into the running Python environment, by the first route that works:

  a. an importable detectron2 is kept as it is (unless it is one this script installed from
     patches that have changed since);
  b. official detectron2 from its source repository at a pinned commit (compiles detectron2._C),
     tried only when the host answers within a few seconds;
  c. the PyPI sdist pb1-detectron2==0.6 (the only complete copy of detectron2's Python sources
     on PyPI), checked against its sha256, unpacked, patched with
     third_party/detectron2/patches/*.patch and installed as pure Python, without the C++
     extension (the sdist has no C++ sources).

detectron2 is not published on PyPI, and CI machines reach only the package registries, so route c
is what runs there. The route taken is printed and recorded in
<sys.prefix>/share/retinamask_d2/detectron2_route.json, which `python -m retinamask_d2.env` reads.
Run it with the environment's own interpreter: `.venv/bin/python scripts/provision_detectron2.py`.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PATCH_DIR = REPO_ROOT / "third_party" / "detectron2" / "patches"
CACHE_DIR = REPO_ROOT / ".cache" / "detectron2"
# Read by retinamask_d2/env.py, which names the same path (this script runs before the package
# and detectron2 are importable, so it cannot import it from there).
ROUTE_FILE = Path(sys.prefix) / "share" / "retinamask_d2" / "detectron2_route.json"

OFFICIAL_REPO = "https://github.com/facebookresearch/detectron2.git"
OFFICIAL_HOST = ("github.com", 443)
# Newest official commit this project was checked against (2026-06-06).
OFFICIAL_COMMIT = "02b5c4e295e990042a714712c21dc79b731e8833"

SDIST_NAME = "pb1-detectron2"
SDIST_VERSION = "0.6"
SDIST_FILE = f"{SDIST_NAME}-{SDIST_VERSION}.tar.gz"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"


def log(msg: str) -> None:
    print(f"[provision_detectron2] {msg}", flush=True)


def run(cmd: list[str], cwd: Path | None = None) -> None:
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, cwd=cwd, check=True)


def pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", *args]


def patches_digest() -> str:
    h = hashlib.sha256()
    for p in sorted(PATCH_DIR.glob("*.patch")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def read_route() -> dict:
    try:
        return json.loads(ROUTE_FILE.read_text())
    except (OSError, ValueError):
        return {}


def write_route(record: dict) -> None:
    ROUTE_FILE.parent.mkdir(parents=True, exist_ok=True)
    ROUTE_FILE.write_text(json.dumps(record, indent=2) + "\n")


def detectron2_location() -> str | None:
    """Where `import detectron2` would load from, without importing it (it is slow)."""
    spec = importlib.util.find_spec("detectron2")
    return None if spec is None else str(Path(spec.origin).parent)


def importable_detectron2() -> bool:
    # A fresh interpreter: this process may have cached an earlier failed import.
    code = "import detectron2.modeling, detectron2.engine"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def host_answers(host: tuple[str, int], timeout: float) -> bool:
    try:
        with socket.create_connection(host, timeout=timeout):
            return True
    except OSError:
        return False


def route_official(timeout: float) -> dict | None:
    if not host_answers(OFFICIAL_HOST, timeout):
        log(f"route b skipped: {OFFICIAL_HOST[0]} did not answer within {timeout:.0f} s")
        return None
    if shutil.which("git") is None:
        log("route b skipped: git is not installed")
        return None
    try:
        # --no-build-isolation: detectron2's setup.py imports the installed torch to compile _C.
        run(pip("install", "--no-build-isolation", f"git+{OFFICIAL_REPO}@{OFFICIAL_COMMIT}"))
    except subprocess.CalledProcessError as e:
        log(f"route b failed ({e}); falling back to route c")
        return None
    return {"route": "b", "source": f"{OFFICIAL_REPO}@{OFFICIAL_COMMIT}", "patches": []}


def fetch_sdist() -> Path:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    sdist = CACHE_DIR / SDIST_FILE
    if not sdist.exists():
        # --no-build-isolation: pip prepares the sdist's metadata, and its setup.py imports torch.
        run(
            pip(
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--no-build-isolation",
                "-d",
                str(CACHE_DIR),
                f"{SDIST_NAME}=={SDIST_VERSION}",
            )
        )
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        sdist.unlink()
        raise SystemExit(
            f"{sdist}: sha256 {digest} does not match the expected {SDIST_SHA256}; "
            "the file was deleted. Refusing to install it."
        )
    log(f"{sdist.name}: sha256 verified")
    return sdist


def apply_patches(src: Path) -> list[str]:
    names = []
    for patch in sorted(PATCH_DIR.glob("*.patch")):
        # `patch` skips the explanatory header above the first diff of each file.
        result = subprocess.run(
            ["patch", "-p1", "--forward", "--batch", "-i", str(patch)],
            cwd=src,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise SystemExit(f"{patch} does not apply to {src}:\n{result.stdout}{result.stderr}")
        names.append(patch.name)
        log(f"applied {patch.name}")
    return names


def route_sdist(digest: str) -> dict:
    if shutil.which("patch") is None:
        raise SystemExit("route c needs the `patch` program (Debian: apt-get install patch)")
    sdist = fetch_sdist()
    with tempfile.TemporaryDirectory(prefix="detectron2-src-") as tmp:
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        src = Path(tmp) / f"{SDIST_NAME}-{SDIST_VERSION}"
        names = apply_patches(src)
        # Non-editable: the build folder is temporary. --no-deps: requirements.txt pins them.
        run(pip("install", "--no-build-isolation", "--no-deps", "--no-cache-dir", str(src)))
    return {
        "route": "c",
        "source": f"PyPI sdist {SDIST_FILE} (sha256 {SDIST_SHA256})",
        "patches": names,
        "patches_sha256": digest,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--host-timeout",
        type=float,
        default=3.0,
        help="seconds to wait for the official source host before skipping route b",
    )
    parser.add_argument(
        "--force-sdist",
        action="store_true",
        help="reinstall from the patched PyPI sdist (route c) whatever is installed",
    )
    args = parser.parse_args()

    previous = read_route()
    digest = patches_digest()
    stale = previous.get("route") == "c" and previous.get("patches_sha256") != digest
    if stale:
        log("the installed detectron2 came from route c with other patches: reinstalling")
    if not (stale or args.force_sdist) and importable_detectron2():
        location = detectron2_location()
        if previous.get("location") == location:
            record = previous  # installed earlier by this script: keep its own route record
        else:
            record = {"route": "a", "source": "already installed", "patches": []}
        log(f"route {record['route']}: keeping the importable detectron2 at {location}")
    else:
        record = None if args.force_sdist else route_official(args.host_timeout)
        record = record or route_sdist(digest)
        if not importable_detectron2():
            raise SystemExit("detectron2 was installed but does not import; see the log above")
        log(f"route {record['route']}: installed detectron2 from {record['source']}")
    record["location"] = detectron2_location()
    write_route(record)


if __name__ == "__main__":
    main()
