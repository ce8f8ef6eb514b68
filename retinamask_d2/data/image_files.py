"""The image files that command-line arguments name: files as given, folders and glob patterns by
image suffix, each path once; every argument or entry that cannot be listed or read (missing,
a symlink loop, no permission) is named, none silently dropped.

Shared by the demo and whatever else takes images from a command line.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

from .image_io import IMAGE_SUFFIXES


@dataclass
class ImageListing:
    """The images found, the problems (an argument or entry that gave no image) and notes."""

    paths: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def list_images(patterns: list[str]) -> ImageListing:
    """Image files named by ``patterns``: files as given (whatever their suffix), folders' and
    glob patterns' files with an image suffix (:data:`IMAGE_SUFFIXES`); the first occurrence of
    a file wins."""
    listing = ImageListing()
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            candidates, what = _folder_entries(path, listing), f"folder {pattern}"
        elif path.exists():
            listing.paths.append(path)
            continue
        elif glob.has_magic(pattern):
            candidates = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
            candidates = [p for p in candidates if not p.is_dir()]
            what = f"pattern {pattern}"
        else:
            listing.problems.append(f"{pattern}: {_unreadable(path) or 'no such file or folder'}")
            continue
        images = [p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES]
        others = len(candidates) - len(images)
        for image in images:
            problem = _unreadable(image)
            if problem:
                listing.problems.append(f"{image}: {problem}")
            else:
                listing.paths.append(image)
        if not images:
            listing.problems.append(
                f"{what} has no image files ({' '.join(IMAGE_SUFFIXES)})"
                + (f"; {others} other file(s) ignored" if others else "")
            )
        elif others:
            listing.notes.append(f"{what}: ignored {others} file(s) without an image suffix")
    listing.paths = _first_occurrences(listing.paths)
    return listing


def _folder_entries(folder: Path, listing: ImageListing) -> list[Path]:
    """The folder's entries that are not folders (files, and links that do not resolve, so that
    they are reported); a folder that cannot be listed is a problem."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:
        listing.problems.append(f"folder {folder}: cannot be listed ({e.strerror})")
        return []
    return [p for p in entries if not p.is_dir()]


def _unreadable(path: Path) -> str:
    """Why ``path`` cannot be read as a file ("" when it can): a symlink loop, a link to
    nothing, no permission, not a regular file."""
    try:
        os.stat(path)
    except OSError as e:
        if os.path.islink(path):
            return f"a symbolic link that does not resolve ({e.strerror})"
        return "" if isinstance(e, FileNotFoundError) and not os.path.lexists(path) else e.strerror
    if not path.is_file():
        return "not a regular file"
    if not os.access(path, os.R_OK):
        return "permission denied"
    return ""


def _first_occurrences(paths: list[Path]) -> list[Path]:
    seen: set[Path] = set()
    unique = []
    for p in paths:
        resolved = p.resolve()
        if resolved not in seen:
            seen.add(resolved)
            unique.append(p)
    return unique
