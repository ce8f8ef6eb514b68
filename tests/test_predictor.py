"""RetinaMaskPredictor: what reaches the model (channel order, size, batching) and what returns."""

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import Boxes, Instances
from PIL import Image

from retinamask_d2 import add_retinamask_config
from retinamask_d2.data.image_io import ImageReadError
from retinamask_d2.predictor import RetinaMaskPredictor, load_config
from tests.common import build_tiny_model, get_tiny_cfg


@META_ARCH_REGISTRY.register()
class RecordingStubModel(torch.nn.Module):
    """Records every call's inputs; returns one whole-image instance per input at its size."""

    def __init__(self, cfg):
        super().__init__()
        self.calls: list[list[dict]] = []

    def forward(self, batched_inputs):
        self.calls.append(batched_inputs)
        outputs = []
        for x in batched_inputs:
            h, w = x["height"], x["width"]
            instances = Instances((h, w))
            instances.pred_boxes = Boxes(torch.tensor([[0.0, 0.0, w, h]]))
            instances.scores = x["image"][0].mean().reshape(1) / 255  # first channel's mean
            instances.pred_classes = torch.zeros(1, dtype=torch.int64)
            instances.pred_masks = torch.ones(1, h, w, dtype=torch.bool)
            outputs.append({"instances": instances})
        return outputs


def _stub_predictor(input_format: str = "BGR") -> RetinaMaskPredictor:
    cfg = get_tiny_cfg()
    cfg.MODEL.META_ARCHITECTURE = "RecordingStubModel"
    cfg.INPUT.FORMAT = input_format
    cfg.DATASETS.TEST = ()
    return RetinaMaskPredictor(cfg)


def _red_rgb(h: int = 48, w: int = 64) -> np.ndarray:
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[..., 0] = 255
    return image


@pytest.mark.parametrize("input_format, red_channel", [("BGR", 2), ("RGB", 0)])
def test_channel_order_reaches_the_model_as_its_config_says(input_format, red_channel):
    predictor = _stub_predictor(input_format)
    predictor.predict(_red_rgb(), format="RGB")
    predictor.predict(_red_rgb()[:, :, ::-1], format="BGR")
    predictor.predict(_red_rgb()[:, :, ::-1])  # BGR is the default, as in DefaultPredictor
    first = predictor.model.calls[0][0]["image"]
    assert first.dtype == torch.float32
    assert first[red_channel].min() == 255 and first.sum() == first[red_channel].sum()
    for call in predictor.model.calls[1:]:
        torch.testing.assert_close(call[0]["image"], first)


def test_images_are_resized_for_the_model_and_results_come_back_at_their_size():
    predictor = _stub_predictor()  # MIN_SIZE_TEST 96, MAX_SIZE_TEST 128
    instances = predictor.predict(_red_rgb(50, 100), format="RGB")
    model_input = predictor.model.calls[0][0]
    # short side 50 -> 96 makes the long side 192 > 128, so the scale is 128 / 100: 64 x 128
    assert tuple(model_input["image"].shape) == (3, 64, 128)
    assert (model_input["height"], model_input["width"]) == (50, 100)
    assert instances.image_size == (50, 100) and instances.pred_masks.shape == (1, 50, 100)


def test_a_batch_is_one_forward_pass_and_keeps_the_order():
    predictor = _stub_predictor()
    shades = [10, 100, 250]
    images = [np.full((30 + 10 * i, 40, 3), s, np.uint8) for i, s in enumerate(shades)]
    results = predictor.predict_batch(images, format="RGB")
    assert len(predictor.model.calls) == 1 and len(predictor.model.calls[0]) == 3
    assert [r.image_size for r in results] == [(30, 40), (40, 40), (50, 40)]
    assert torch.tensor([r.scores.item() for r in results]).mul(255).round().tolist() == shades
    assert all(r.scores.device.type == "cpu" for r in results)
    assert predictor.predict_batch([]) == [] and len(predictor.model.calls) == 1


def test_paths_and_arrays_of_any_kind_give_the_same_model_input(tmp_path):
    predictor = _stub_predictor()
    gray = np.random.default_rng(0).integers(0, 256, (40, 50), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    predictor.predict_batch(
        [tmp_path / "gray.png", str(tmp_path / "gray.png"), gray, gray.astype(np.uint16) * 257]
    )
    inputs = [x["image"] for x in predictor.model.calls[0]]
    assert torch.equal(inputs[0][0], inputs[0][1])  # gray: three equal channels
    for other in inputs[1:]:
        torch.testing.assert_close(other, inputs[0])  # path, str path, uint8, uint16 alike


def test_bad_images_and_arguments_are_refused_clearly(tmp_path):
    predictor = _stub_predictor()
    (tmp_path / "notes.jpg").write_text("hello")
    with pytest.raises(ImageReadError, match="notes.jpg: not an image file"):
        predictor.predict(tmp_path / "notes.jpg")
    with pytest.raises(ImageReadError, match="^image 1 of the batch: .*float32"):
        predictor.predict_batch([_red_rgb(), _red_rgb().astype(np.float32)])
    with pytest.raises(TypeError, match="list of images"):
        predictor.predict_batch(_red_rgb())
    with pytest.raises(ValueError, match="'BGR' or 'RGB'"):
        predictor.predict(_red_rgb(), format="bgr")
    assert predictor.model.calls == []  # nothing reached the model


def test_metadata_is_the_test_sets_or_empty():
    assert _stub_predictor().metadata.get("thing_classes", None) is None
    cfg = get_tiny_cfg()
    cfg.MODEL.META_ARCHITECTURE = "RecordingStubModel"
    cfg.DATASETS.TEST = ("coco_2017_val",)
    assert RetinaMaskPredictor(cfg).metadata.thing_classes[:2] == ["person", "bicycle"]


def test_metadata_comes_from_the_models_config_without_reading_a_dataset(tmp_path):
    cfg = get_tiny_cfg()
    cfg.MODEL.META_ARCHITECTURE = "RecordingStubModel"
    cfg.MODEL.RETINAMASK.CLASS_NAMES = ["three", "seven", "ten"]
    cfg.MODEL.RETINAMASK.DATASET_CATEGORY_IDS = [3, 7, 10]
    missing = str(tmp_path / "moved.json")  # the training json is gone: nothing reads it
    cfg.DATASETS.COCO_JSON = (("test_predictor_val", missing, str(tmp_path)),)
    cfg.DATASETS.TEST = ("test_predictor_val",)

    metadata = RetinaMaskPredictor(cfg).metadata

    assert metadata.thing_classes == ["three", "seven", "ten"]
    assert metadata.thing_dataset_id_to_contiguous_id == {3: 0, 7: 1, 10: 2}
    assert "test_predictor_val" not in DatasetCatalog.list()  # not registered either


@pytest.fixture(scope="module")
def tiny_retinamask(tmp_path_factory):
    """A tiny RetinaMask with random weights saved to a checkpoint, and a predictor loading it."""
    torch.manual_seed(0)
    cfg = get_tiny_cfg()
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.0
    cfg.TEST.DETECTIONS_PER_IMAGE = 10
    model = build_tiny_model(cfg)
    folder = tmp_path_factory.mktemp("tiny_retinamask")
    DetectionCheckpointer(model, save_dir=str(folder)).save("model_final")
    cfg.MODEL.WEIGHTS = str(folder / "model_final.pth")
    return model, RetinaMaskPredictor(cfg)


def test_load_config_reads_a_dumped_config_with_weights_and_overrides(tmp_path):
    cfg = get_tiny_cfg(num_classes=5)
    cfg.DATASETS.COCO_JSON = (("mine_train", "train.json", "images"),)  # as train_net.py writes
    (tmp_path / "config.yaml").write_text(cfg.dump())
    plain = get_cfg()  # the recipe of docs/model.md reads it back too
    add_retinamask_config(plain)
    plain.merge_from_file(str(tmp_path / "config.yaml"))
    assert [tuple(e) for e in plain.DATASETS.COCO_JSON] == [("mine_train", "train.json", "images")]
    loaded = load_config(
        tmp_path / "config.yaml", tmp_path / "w.pth", ["TEST.DETECTIONS_PER_IMAGE", "7"]
    )
    assert loaded.MODEL.RETINANET.NUM_CLASSES == 5 and loaded.MODEL.RESNETS.DEPTH == 18
    assert loaded.MODEL.WEIGHTS == str(tmp_path / "w.pth")
    assert loaded.TEST.DETECTIONS_PER_IMAGE == 7
    assert loaded.MODEL.RETINAMASK.TEST_TOPK_MASKS == cfg.MODEL.RETINAMASK.TEST_TOPK_MASKS


def test_weights_come_from_the_checkpoint(tiny_retinamask):
    model, predictor = tiny_retinamask
    loaded = predictor.model.state_dict()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(loaded[name], value, msg=name)
    assert not predictor.model.training


def test_retinamask_batch_equals_one_image_at_a_time(tiny_retinamask):
    _, predictor = tiny_retinamask
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (72, 96, 3), dtype=np.uint8) for _ in range(2)]
    batch = predictor.predict_batch(images)
    for image, together in zip(images, batch):
        alone = predictor.predict(image)
        assert len(together) == len(alone) == 10
        assert together.image_size == (72, 96)
        assert set(together.get_fields()) == {"pred_boxes", "scores", "pred_classes", "pred_masks"}
        torch.testing.assert_close(together.scores, alone.scores)
        torch.testing.assert_close(together.pred_boxes.tensor, alone.pred_boxes.tensor)
        assert torch.equal(together.pred_classes, alone.pred_classes)
        agreement = (together.pred_masks == alone.pred_masks).float().mean()
        assert agreement > 0.999
