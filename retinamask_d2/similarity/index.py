"""A folder that stores every object found in a set of images, with its mask, cut-out and
embedding, and answers "which objects look like this one" and "which objects are the same".

Layout of the folder:
- ``index.json``: how it was made (model config and weights, embedder, crop mode, confidence
  threshold, embedding size) and, per image, its content hash and object ids;
- ``objects.jsonl``: one object a line (id, image, box, RLE mask, class, score, angle, cut-out);
- ``embeddings.npy``: (N, D) float32 unit vectors, row i for line i of ``objects.jsonl``;
- ``cutouts/``: each object's upright RGBA cut-out.
Every file is written to a temporary name and renamed over the old one, so an interrupted run
leaves the previous index whole.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pycocotools.mask as mask_util
from detectron2.structures import Instances

from retinamask_d2.data.classes import class_name
from retinamask_d2.visualization.cutouts import frame_angles, upright_cutout

from .crops import CROP_MODES, ObjectCrop, instance_crops

INDEX_FILE, OBJECTS_FILE, EMBEDDINGS_FILE, CUTOUT_DIR = (
    "index.json",
    "objects.jsonl",
    "embeddings.npy",
    "cutouts",
)
INDEX_VERSION = 1


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class IndexReport:
    """What one ``add_images`` call did: images embedded, skipped as unchanged, and refused
    (path -> reason)."""

    indexed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    objects: int = 0


@dataclass
class Hit:
    """One search result: the stored object and its cosine similarity to the query."""

    similarity: float
    object: dict[str, Any]


class ObjectIndex:
    """The objects of a folder made by :meth:`create` (or opened with :meth:`open`)."""

    def __init__(self, folder: Path, meta: dict, objects: list[dict], embeddings: np.ndarray):
        self.folder = folder
        self.meta = meta
        self.objects = objects
        self.embeddings = embeddings
        self._faiss = None

    @classmethod
    def create(cls, folder: str | os.PathLike, **settings: Any) -> ObjectIndex:
        """An empty index in ``folder`` with ``settings`` (embedder, crop_mode, ...) recorded;
        an existing index there is opened instead, and must have been made the same way."""
        folder = Path(folder)
        if (folder / INDEX_FILE).exists():
            index = cls.open(folder)
            differs = {
                k: (index.meta.get(k), v) for k, v in settings.items() if index.meta.get(k) != v
            }
            if differs:
                shown = ", ".join(
                    f"{k}: {old!r} there, {new!r} now" for k, (old, new) in differs.items()
                )
                raise ValueError(
                    f"{folder / INDEX_FILE} was made with other settings ({shown}); "
                    "index into another folder"
                )
            return index
        if settings.get("crop_mode") not in CROP_MODES:
            raise ValueError(
                f"crop_mode must be one of {CROP_MODES}, got {settings.get('crop_mode')!r}"
            )
        meta = {"version": INDEX_VERSION, **settings, "images": {}}
        return cls(folder, meta, [], np.zeros((0, 0), dtype=np.float32))

    @classmethod
    def open(cls, folder: str | os.PathLike) -> ObjectIndex:
        """The index stored in ``folder``."""
        folder = Path(folder)
        index_file = folder / INDEX_FILE
        if not index_file.is_file():
            raise FileNotFoundError(f"{folder} holds no object index ({INDEX_FILE} is missing)")
        meta = json.loads(index_file.read_text())
        if meta.get("version") != INDEX_VERSION:
            raise ValueError(f"{index_file}: index version {meta.get('version')}, expected 1")
        lines = (folder / OBJECTS_FILE).read_text().splitlines()
        objects = [json.loads(line) for line in lines if line.strip()]
        embeddings = np.load(folder / EMBEDDINGS_FILE)
        if len(embeddings) != len(objects):
            raise ValueError(
                f"{folder}: {len(objects)} objects but {len(embeddings)} embeddings; "
                "the index is damaged, index again into a new folder"
            )
        return cls(folder, meta, objects, embeddings)

    def add_images(
        self,
        paths: Iterable[str | os.PathLike],
        predict: Callable[[np.ndarray], Instances],
        read_rgb: Callable[[str], np.ndarray],
        embed: Callable[..., np.ndarray],
        metadata,
    ) -> IndexReport:
        """Find, cut out and embed the objects of each image in ``paths`` and store them.

        An image whose content hash is recorded already is skipped; one that changed has its
        old objects replaced. Each file is read once, by ``read_rgb`` (path -> (H, W, 3) RGB),
        and ``predict`` finds the objects of that array (Instances at its size); either may
        raise for a bad file: it is named in the report, the others go on.
        """
        report = IndexReport()
        images = self.meta["images"]
        crop_mode = self.meta["crop_mode"]
        for path in paths:
            key = str(Path(path).resolve())
            try:
                digest = file_sha256(key)
                if images.get(key, {}).get("sha256") == digest:
                    report.unchanged.append(key)
                    continue
                rgb = read_rgb(key)
                instances = predict(rgb)
            except (OSError, ValueError) as e:
                report.failed[key] = str(e)
                continue
            self._remove_image(key)
            added = self._objects_of(key, digest, rgb, instances, embed, crop_mode, metadata)
            images[key] = {"sha256": digest, "objects": [o["id"] for o, _ in added]}
            if added:
                vectors = np.stack([v for _, v in added])
                self.embeddings = (
                    vectors
                    if len(self.objects) == 0
                    else np.concatenate([self.embeddings, vectors])
                )
                self.objects.extend(o for o, _ in added)
            report.indexed.append(key)
            report.objects += len(added)
        self.save()
        return report

    def _objects_of(self, key, digest, rgb, instances, embed, crop_mode, metadata):
        masks = np.asarray(instances.pred_masks, dtype=bool)
        boxes = instances.pred_boxes.tensor.numpy()
        angles = frame_angles(instances)
        crops, kept = instance_crops(rgb, instances, crop_mode)
        vectors = embed(crops, crop_mode == "upright", instances, kept) if crops else []
        (self.folder / CUTOUT_DIR).mkdir(parents=True, exist_ok=True)
        added = []
        for i, crop, vector in zip(kept, crops, vectors):
            object_id = f"{digest[:12]}:{i}"
            upright = crop if crop_mode == "upright" else None
            rgba, angle = _upright_rgba(rgb, masks[i], upright, angles[i])
            cutout = self.folder / CUTOUT_DIR / f"{object_id.replace(':', '_')}.png"
            # Fast PNG compression: the files are for looking at, and writing them is a large
            # part of what indexing adds to prediction (benchmarks/objects/index_speed.py).
            bgra = cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA)
            cv2.imwrite(str(cutout), bgra, [cv2.IMWRITE_PNG_COMPRESSION, 1])
            rle = mask_util.encode(np.asfortranarray(masks[i].astype(np.uint8)))
            class_id = int(instances.pred_classes[i])
            added.append(
                (
                    {
                        "id": object_id,
                        "image": key,
                        "box": [round(float(v), 2) for v in boxes[i]],
                        "mask": {"size": rle["size"], "counts": rle["counts"].decode()},
                        "class_id": class_id,
                        "class": class_name(metadata, class_id),
                        "score": round(float(instances.scores[i]), 4),
                        "angle": round(float(angle), 2),
                        "cutout": str(cutout.relative_to(self.folder)),
                    },
                    vector,
                )
            )
        return added

    def _remove_image(self, key: str) -> None:
        old = set(self.meta["images"].pop(key, {}).get("objects", []))
        if not old:
            return
        keep = [i for i, o in enumerate(self.objects) if o["id"] not in old]
        for o in self.objects:
            if o["id"] in old:
                (self.folder / o["cutout"]).unlink(missing_ok=True)
        self.objects = [self.objects[i] for i in keep]
        self.embeddings = self.embeddings[keep]

    def save(self) -> None:
        """Write the three files, each through a temporary name."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.meta["dim"] = int(self.embeddings.shape[1]) if len(self.objects) else None
        lines = "".join(json.dumps(o) + "\n" for o in self.objects)
        _replace(self.folder / OBJECTS_FILE, lambda f: f.write(lines.encode()))
        _replace(self.folder / EMBEDDINGS_FILE, lambda f: np.save(f, self.embeddings))
        # The index file last: it names what the other two hold.
        meta = json.dumps(self.meta, indent=1).encode()
        _replace(self.folder / INDEX_FILE, lambda f: f.write(meta))
        self._faiss = None

    def get(self, object_id: str) -> tuple[dict, np.ndarray]:
        """The stored object ``object_id`` and its embedding."""
        for i, o in enumerate(self.objects):
            if o["id"] == object_id:
                return o, self.embeddings[i]
        raise KeyError(f"no object {object_id!r} in {self.folder}")

    def search(
        self,
        query: np.ndarray,
        k: int = 10,
        classes: Iterable[str] | None = None,
        min_score: float = 0.0,
        use_faiss: bool = False,
    ) -> list[Hit]:
        """The ``k`` stored objects most similar to the unit vector ``query`` (cosine),
        among those of ``classes`` (names) scoring at least ``min_score``.

        Exact search with one matrix product; ``use_faiss`` answers from a FAISS inner-product
        index instead (``faiss-cpu`` installed), for collections too large to scan.
        """
        if len(self.objects) == 0:
            return []
        allowed = self._allowed(classes, min_score)
        if use_faiss and allowed is None:
            similarities, rows = self._faiss_index().search(query[None].astype(np.float32), k)
            pairs = [(float(s), int(r)) for s, r in zip(similarities[0], rows[0]) if r >= 0]
        else:
            similarities = self.embeddings @ query.astype(np.float32)
            if allowed is not None:
                similarities = np.where(allowed, similarities, -np.inf)
            k = min(k, int(np.isfinite(similarities).sum()))
            top = np.argpartition(-similarities, k - 1)[:k] if k > 0 else np.zeros(0, int)
            top = top[np.argsort(-similarities[top], kind="stable")]
            pairs = [(float(similarities[r]), int(r)) for r in top]
        return [Hit(s, self.objects[r]) for s, r in pairs]

    def _allowed(self, classes: Iterable[str] | None, min_score: float) -> np.ndarray | None:
        if classes is None and min_score <= 0:
            return None
        wanted = None if classes is None else set(classes)
        return np.array(
            [
                (wanted is None or o["class"] in wanted) and o["score"] >= min_score
                for o in self.objects
            ]
        )

    def _faiss_index(self):
        if self._faiss is None:
            import faiss  # optional: pip install faiss-cpu

            self._faiss = faiss.IndexFlatIP(self.embeddings.shape[1])
            self._faiss.add(np.ascontiguousarray(self.embeddings, dtype=np.float32))
        return self._faiss

    def group(
        self, threshold: float, same_class: bool = True, block: int = 4096
    ) -> list[list[int]]:
        """Groups of near-duplicates: the connected components of "cosine similarity at least
        ``threshold``" (and, with ``same_class``, the same class), largest first; objects alike
        to no other are left out. Rows of ``objects`` are returned."""
        count = len(self.objects)
        parent = list(range(count))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        classes = np.array([o["class_id"] for o in self.objects])
        for start in range(0, count, block):
            similar = self.embeddings[start : start + block] @ self.embeddings.T >= threshold
            if same_class:
                similar &= classes[start : start + block, None] == classes[None, :]
            for i, j in zip(*np.nonzero(similar)):
                a, b = find(start + int(i)), find(int(j))
                if a != b:
                    parent[a] = b
        groups: dict[int, list[int]] = {}
        for i in range(count):
            groups.setdefault(find(i), []).append(i)
        return sorted((g for g in groups.values() if len(g) > 1), key=len, reverse=True)


def _upright_rgba(
    rgb: np.ndarray, mask: np.ndarray, upright: ObjectCrop | None, angle: float | None
):
    """The object's upright RGBA cut-out and its angle: from its ``upright`` crop when the index
    embeds upright crops (already made), else made here along ``angle`` (None: the mask's)."""
    if upright is not None:
        alpha = np.where(upright.valid, np.uint8(255), np.uint8(0))
        colour = np.where(upright.valid[..., None], upright.rgb, np.uint8(0))
        return np.dstack([colour, alpha]), upright.angle
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return upright_cutout(rgb[y0:y1, x0:x1], mask[y0:y1, x0:x1], angle)


def _replace(path: Path, write: Callable) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
