"""What the object index costs: indexing an image against the demo's prediction of it, and one
search over 100,000 stored objects (exact numpy search).

    python -m benchmarks.objects.index_speed --model-dir output/quickstart \
        --images datasets/synthetic/val

Indexing and plain prediction of the same images take turns, round by round, so that load from
elsewhere slows both alike; the ratio is what the index adds (crops, embeddings, RLE masks,
cut-out files). Writes ``benchmarks/results/object_index_speed.json`` and the line of
``docs/comparing_objects.md``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np
import torch

from benchmarks.harness import RESULTS_DIR, environment, load_average, write_json
from retinamask_d2.predictor import RetinaMaskPredictor, load_config
from retinamask_d2.similarity.finder import ObjectFinder
from retinamask_d2.similarity.index import ObjectIndex

RESULTS = RESULTS_DIR / "object_index_speed.json"
DOC = Path(__file__).resolve().parents[2] / "docs" / "comparing_objects.md"
MARKERS = ("<!-- object-index-speed:begin -->", "<!-- object-index-speed:end -->")
STORED = 100_000


def search_ms(dim: int, queries: int = 20) -> float:
    """Median ms of a top-10 search over ``STORED`` random unit vectors of ``dim``."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(STORED, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = ObjectIndex(Path("unused"), {}, [{"id": str(i)} for i in range(STORED)], vectors)
    times = []
    for q in vectors[:queries]:
        start = time.perf_counter()
        index.search(q, k=10)
        times.append((time.perf_counter() - start) * 1000)
    return median(times)


def indexing_ratio(model_dir: Path, images: list[Path], embedder: str, rounds: int = 3) -> dict:
    """Seconds per image of predicting all ``images`` and of indexing them in one call (as
    ``objects.py index`` does), rounds taking turns; the fastest round of each."""
    cfg = load_config(model_dir / "config.yaml", model_dir / "model_final.pth")
    predictor = RetinaMaskPredictor(cfg, confidence_threshold=0.5)
    finder = ObjectFinder(predictor, embedder, "upright")
    predict, index = [], []
    with tempfile.TemporaryDirectory() as folder:
        predictor.predict(str(images[0]))  # warm-up
        for i in range(rounds):
            start = time.perf_counter()
            for image in images:
                predictor.predict(str(image))
            predict.append((time.perf_counter() - start) / len(images))
            start = time.perf_counter()
            finder.index(Path(folder) / str(i), images)
            index.append((time.perf_counter() - start) / len(images))
    return {
        "embedder": embedder,
        "predict_s": min(predict),
        "index_s": min(index),
        "ratio": min(index) / min(predict),
    }


def line(result: dict) -> str:
    rows = ", ".join(
        f"{r['embedder']} {r['index_s'] * 1000:.0f} ms ({r['ratio']:.2f}×)"
        for r in result["indexing"]
    )
    searches = ", ".join(f"{d}-d {ms:.1f} ms" for d, ms in result["search_ms"].items())
    return (
        f"Indexing an image of `{result['images']}` with the model of `{result['model']}`, "
        f"against the demo's prediction of it ({result['predict_ms']:.0f} ms; fastest of 3 rounds, "
        "taking turns): "
        f"{rows}. One top-10 search over {STORED:,} stored objects (exact, numpy): {searches}. "
        f"CPU, {result['environment'].get('threads', '?')} thread(s), load {result['load'][0]:.1f} "
        "(`python -m benchmarks.objects.index_speed`)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=Path("output/quickstart"))
    parser.add_argument("--images", type=Path, default=Path("datasets/synthetic/val"))
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = sorted(args.images.glob("*.png"))[: args.count]
    indexing = [indexing_ratio(args.model_dir, images, e) for e in ("handcrafted", "pretrained")]
    result = {
        "model": str(args.model_dir),
        "images": str(args.images),
        "predict_ms": min(r["predict_s"] for r in indexing) * 1000,
        "indexing": indexing,
        "search_ms": {str(d): search_ms(d) for d in (238, 1280)},
        "load": load_average(),
        "environment": {**environment(), "threads": args.threads},
    }
    write_json(RESULTS, result)
    text = DOC.read_text()
    begin, end = MARKERS
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    DOC.write_text(f"{head}{begin}\n{line(result)}\n{end}{tail}")
    print(line(result))


if __name__ == "__main__":
    main()
