"""Comparing objects by appearance: crops, embeddings, and an index to search and group them."""

from .crops import CROP_MODES, crop_object
from .embedders import EMBEDDERS, build_embedder
from .index import ObjectIndex

__all__ = ["CROP_MODES", "EMBEDDERS", "ObjectIndex", "build_embedder", "crop_object"]
