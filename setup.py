#!/usr/bin/env python
"""retinamask_d2: RetinaMask (Fu, Shvets, Berg 2019) as a detectron2 plugin.

detectron2 is not on PyPI: install it first (`make env` does it, see docs/INSTALL.md),
then `pip install -e .`. The top-level configs/ folder is shipped inside the package as
`retinamask_d2.configs`, so `retinamask_d2.model_zoo.get_config_file()` finds it after a
non-editable install too.
"""

from setuptools import find_packages, setup

setup(
    name="retinamask_d2",
    version="0.1.0",
    description="RetinaMask single-shot instance segmentation as a detectron2 plugin",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=[*find_packages(include=["retinamask_d2*"]), "retinamask_d2.configs"],
    package_dir={"retinamask_d2.configs": "configs"},
    package_data={"retinamask_d2.configs": ["*.yaml", "**/*.yaml"]},
    install_requires=[
        "detectron2",
        "torch>=1.10",
        "torchvision",
        "fvcore",
        "pycocotools>=2.0.2",
        "opencv-python",
        "tqdm",
    ],
    # `pip install .[export]`: ONNX export (onnx) and running the exported file (onnxruntime).
    extras_require={"export": ["onnx", "onnxruntime"]},
)
