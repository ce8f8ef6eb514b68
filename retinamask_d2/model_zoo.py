"""Paths of the configs shipped with retinamask_d2, wherever the package is installed."""

from pathlib import Path

from retinamask_d2 import configs as _configs_package

CONFIG_DIR = Path(_configs_package.__path__[0])


def get_config_file(name: str) -> str:
    """The path of a shipped config, e.g. `get_config_file("retinamask_R50_FPN.yaml")`."""
    path = CONFIG_DIR / name
    if not path.is_file():
        shipped = sorted(str(p.relative_to(CONFIG_DIR)) for p in CONFIG_DIR.rglob("*.yaml"))
        raise FileNotFoundError(f"No config {name!r} in {CONFIG_DIR}; shipped configs: {shipped}")
    return str(path)
