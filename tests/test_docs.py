"""The README and docs/ hold together: relative links resolve, the README stays short, and the
generated benchmark blocks live in the one file that benchmarks/report.py rewrites."""

import re
from pathlib import Path

import pytest
from PIL import Image

from tests.common import load_script

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 160
GENERATED = ("quickstart", "benchmarks", "thin_objects", "quickstart_variants", "export")

FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def prose(text: str) -> str:
    """The text without fenced code blocks, whose ``#`` lines and brackets are code."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings; repeated headings get -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(prose(page.read_text(encoding="utf-8"))):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(page: Path) -> list[str]:
    text = CODE_SPAN.sub("", prose(page.read_text(encoding="utf-8")))
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target} (no heading #{anchor} in {file.name})")
    return broken


def test_slug_matches_github_anchors():
    assert slug("Export (TorchScript, ONNX)") == "export-torchscript-onnx"
    assert slug("What `make env` does") == "what-make-env-does"
    assert slug("The fallback's detectron2 patches") == "the-fallbacks-detectron2-patches"
    assert slug("Long, thin and crossing objects") == "long-thin-and-crossing-objects"


def test_link_check_finds_missing_files_and_headings(tmp_path):
    (tmp_path / "other.md").write_text("# Title\n\n## A section\n\n```\n# not a heading\n```\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#a-section) [`code`](other.md) ![img](missing.png) [web](https://x.org)\n"
        "[gone](other.md#not-a-heading) [self](#top) `[not a link](nowhere.md)`\n\n# Top\n"
    )
    assert broken_links(page) == [
        "missing.png (no such file)",
        "other.md#not-a-heading (no heading #not-a-heading in other.md)",
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_point_to_existing_files_and_headings(page):
    assert relative_links(page) or page.name != "README.md", "the README links nowhere"
    assert broken_links(page) == []


def test_readme_stays_short_and_links_every_doc():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < README_MAX_LINES
    linked = {(REPO / t.partition("#")[0]).resolve() for t in relative_links(REPO / "README.md")}
    assert {p.resolve() for p in DOCS.glob("*.md")} <= linked


def test_generated_blocks_live_in_docs_benchmarks_only():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for name in GENERATED:
            count = (
                text.count(f"<!-- generated:{name} -->"),
                text.count(f"<!-- /generated:{name} -->"),
            )
            expected = (1, 1) if page == DOCS / "benchmarks.md" else (0, 0)
            assert count == expected, f"{page.name}: generated:{name} markers {count}"


def test_cutouts_figure_rows_come_from_the_demos_cutouts(tmp_path):
    figure = load_script(DOCS / "images" / "cutouts_figure.py", "cutouts_figure")
    (tmp_path / "cutouts").mkdir()
    Image.new("RGB", (40, 20), (0, 0, 255)).save(tmp_path / "a.png")  # drawing, same name
    Image.new("RGB", (40, 20), (9, 9, 9)).save(tmp_path / "image.png")
    strip = Image.new("RGBA", (10, 2), (255, 0, 0, 255))
    strip.putpixel((0, 0), (0, 0, 0, 0))  # one transparent pixel
    for name in ("a_001_disk_0.80.png", "a_000_bar_0.90.png", "b_000_disk_0.70.png"):
        strip.save(tmp_path / "cutouts" / name)
    groups = figure.cutouts_by_image(tmp_path / "cutouts")
    assert {s: [(i, c) for i, c, _ in v] for s, v in groups.items()} == {
        "a": [(0, "bar"), (1, "disk")],
        "b": [(0, "disk")],
    }
    row = figure.row(tmp_path / "image.png", tmp_path / "a.png", [groups["a"][0][2]])
    zoom = figure.CUTOUT_ZOOM
    assert row.height == figure.ROW_HEIGHT
    assert row.width == 2 * 2 * figure.ROW_HEIGHT + 2 * figure.GAP + round(10 * zoom)
    x0, y0 = 4 * figure.ROW_HEIGHT + 2 * figure.GAP, (figure.ROW_HEIGHT - round(2 * zoom)) // 2
    assert row.getpixel((x0, y0)) == (214, 214, 214)  # the transparent pixel: checkerboard
    assert row.getpixel((x0 + round(zoom), y0)) == (255, 0, 0)
    (tmp_path / "cutouts" / "stray.png").write_bytes(b"")
    with pytest.raises(ValueError, match="stray.png"):
        figure.cutouts_by_image(tmp_path / "cutouts")
