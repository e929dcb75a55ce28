"""From positioned pieces of text to markdown: reading order, paragraphs, headings, lists, tables.

Both readers feed this module the same thing: :class:`Box` es (a word from
the text layer, a line or word from OCR, or a whole table or image already
recognised), in one coordinate system with y growing downwards. The steps:

1. **Reading order** by recursive XY-cut: a region is split at its widest
   empty band, horizontal (between lines) or vertical (a column gutter at
   least ``col_gap`` wide), so a two-column page is read column by column
   while a heading spanning both columns stays first.
2. **Lines**: the pieces of one band, clustered by vertical centre and
   sorted left to right.
3. **Blocks**: consecutive lines of one size, close together and
   left-overlapping, form a paragraph; a line starting with a bullet starts a
   list item; text clearly larger than the body is a heading (``#`` for the
   largest size, ``##`` next, ...).
4. **Tables** arrive as rows of cells (from pdfplumber's ruled-table finder
   or :func:`find_grids` on a scan) and are written as markdown tables.

:func:`find_grids` and :func:`deskew` work on page images (NumPy arrays)
for the OCR path.
"""

from __future__ import annotations

import itertools
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

BULLETS = frozenset("•◦▪‣●○■□\u2013\u2014-*·∙")
# What OCR makes of a bullet dot: lone punctuation before the item's text.
_OCR_BULLET = re.compile(r"^[^\w\s]{1,2}$")  # OCR reads "•" as ".", "°_", "*<", "©"...
_NUMBERED = re.compile(r"^(\d{1,3}|[a-zA-Z])[.)]$")
_RULE_JUNK = re.compile(r"(?<=\s)[|\[\]!]+|[|\[\]]+(?=\s)")
_CID = re.compile(r"^\(cid:\d+\)$")  # a glyph without Unicode: in a list, the bullet


@dataclass
class Box:
    """A positioned piece of a page: text, or a table/image placed as one block."""

    x0: float
    y0: float
    x1: float
    y1: float
    text: str = ""
    size: float = 0.0  # font size (text layer) or line height (OCR), in page units
    kind: str = "text"  # "text", "table", "image"
    rows: list[list[str]] | None = None  # for tables
    conf: float = 1.0

    @property
    def cx(self) -> float:
        return (self.x0 + self.x1) / 2

    @property
    def cy(self) -> float:
        return (self.y0 + self.y1) / 2

    @property
    def height(self) -> float:
        return self.y1 - self.y0


@dataclass
class Block:
    """A paragraph, heading, list item, table or image, in reading order."""

    kind: str  # "para", "heading", "item", "table", "image"
    lines: list[list[Box]] = field(default_factory=list)
    size: float = 0.0
    level: int = 0
    box: Box | None = None  # for tables and images

    @property
    def text(self) -> str:
        return join_lines([" ".join(b.text for b in line) for line in self.lines])


# ---------------------------------------------------------------------------
# Reading order
# ---------------------------------------------------------------------------


def _gaps(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Empty stretches between the union of ``intervals`` (as (start, end) pairs)."""
    out: list[tuple[float, float]] = []
    ivs = sorted(intervals)
    reach = ivs[0][1]
    for a, b in ivs[1:]:
        if a > reach:
            out.append((reach, a))
        reach = max(reach, b)
    return out


def reading_order(boxes: Sequence[Box], col_gap: float) -> list[list[Box]]:
    """``boxes`` as lines in reading order (each line sorted left to right)."""
    out: list[list[Box]] = []
    stack: list[list[Box]] = [list(boxes)] if boxes else []
    # Depth-first, regions pushed in reverse so the first one is read first.
    while stack:
        region = stack.pop()
        if len(region) == 1:
            out.append(region)
            continue
        hgaps = _gaps([(b.y0, b.y1) for b in region])
        vgaps = [g for g in _gaps([(b.x0, b.x1) for b in region])
                 if g[1] - g[0] >= col_gap and _both_wide(region, g, 4 * col_gap)]
        best_h = max(hgaps, key=lambda g: g[1] - g[0], default=None)
        best_v = max(vgaps, key=lambda g: g[1] - g[0], default=None)
        if best_v is not None and (best_h is None or best_v[1] - best_v[0] > best_h[1] - best_h[0]):
            cut = (best_v[0] + best_v[1]) / 2
            first = [b for b in region if b.cx < cut]
            second = [b for b in region if b.cx >= cut]
        elif best_h is not None:
            cut = (best_h[0] + best_h[1]) / 2
            first = [b for b in region if b.cy < cut]
            second = [b for b in region if b.cy >= cut]
        else:
            out.extend(_lines(region))
            continue
        if not first or not second:  # degenerate (cannot happen with real gaps)
            out.extend(_lines(region))
            continue
        stack.append(second)
        stack.append(first)
    return out


def _both_wide(region: list[Box], gap: tuple[float, float], width: float) -> bool:
    """Whether both sides of a vertical gap are columns (at least ``width`` wide).

    A bullet or a list number, narrow, is not a column: it stays with its line.
    """
    left = [b for b in region if b.x1 <= gap[0]]
    right = [b for b in region if b.x0 >= gap[1]]
    return bool(left and right) and all(
        max(b.x1 for b in side) - min(b.x0 for b in side) >= width for side in (left, right)
    )


def _lines(region: list[Box]) -> list[list[Box]]:
    """Pieces of one band (no empty horizontal stretch) clustered into lines."""
    heights = [b.height for b in region if b.kind == "text"] or [1.0]
    tol = 0.5 * statistics.median(heights)
    lines: list[list[Box]] = []
    for b in sorted(region, key=lambda b: b.cy):
        if lines and abs(b.cy - statistics.fmean(x.cy for x in lines[-1])) <= tol:
            lines[-1].append(b)
        else:
            lines.append([b])
    return [sorted(line, key=lambda b: b.x0) for line in lines]


# ---------------------------------------------------------------------------
# Blocks and markdown
# ---------------------------------------------------------------------------


def join_lines(lines: Sequence[str]) -> str:
    """Lines of one paragraph joined by spaces, undoing end-of-line hyphenation."""
    out = ""
    for line in lines:
        line = line.strip()
        if not line:
            continue
        if out.endswith("-") and len(out) > 1 and out[-2].isalpha() and line[:1].islower():
            out = out[:-1] + line
        else:
            out = f"{out} {line}" if out else line
    return out


def _starts_item(line: list[Box], ocr: bool) -> bool:
    first = line[0].text.strip()
    if first[:1] in BULLETS and (len(first) == 1 or first[1] == " "):
        return True
    return len(line) > 1 and bool(_NUMBERED.match(first) or _CID.match(first)
                                  or (ocr and _OCR_BULLET.match(first)))


def _strip_bullet(line: list[Box], ocr: bool = False) -> list[Box]:
    first = line[0].text.strip()
    if (len(first) <= 3 or _CID.match(first)) and len(line) > 1 and not _NUMBERED.match(first):
        rest = line[1:]
        # OCR may read one dot as two junk tokens (". _"): drop the second too.
        while ocr and len(rest) > 1 and _OCR_BULLET.match(rest[0].text.strip()):
            rest = rest[1:]
        return rest
    if first[:1] in BULLETS and first[1:2] == " ":
        return [Box(line[0].x0, line[0].y0, line[0].x1, line[0].y1, first[2:], line[0].size),
                *line[1:]]
    return line


def _line_size(line: list[Box]) -> float:
    sizes = sorted(b.size for b in line if b.kind == "text")
    return sizes[len(sizes) // 2] if sizes else 0.0


def _chars(line: list[Box]) -> int:
    return sum(len(b.text) for b in line)


def _weighted_median(pairs: list[tuple[float, int]]) -> float:
    pairs = sorted(pairs)
    half = sum(w for _, w in pairs) / 2
    acc = 0
    for v, w in pairs:
        acc += w
        if acc >= half:
            return v
    return pairs[-1][0] if pairs else 0.0


def _heading_levels(sizes: list[float], body: float, ocr: bool) -> list[float]:
    """The smallest size of each heading level, largest level first."""
    factor = 1.2 if ocr else 1.12
    big = sorted((s for s in sizes if body and s >= body * factor), reverse=True)
    floors: list[float] = []
    for s in big:
        if not floors or s < floors[-1] * (0.9 if ocr else 0.97):
            floors.append(s)
        else:
            floors[-1] = s
    return floors


def _overlap(above: list[Box], below: list[Box]) -> float:
    ax0, ax1 = min(b.x0 for b in above), max(b.x1 for b in above)
    bx0, bx1 = min(b.x0 for b in below), max(b.x1 for b in below)
    return min(ax1, bx1) - max(ax0, bx0)


def _gap(above: list[Box], below: list[Box]) -> float:
    return min(b.y0 for b in below) - max(b.y1 for b in above)


def blocks(lines: list[list[Box]], *, ocr: bool = False, body: float | None = None) -> list[Block]:
    """Group ordered lines into paragraphs, headings, list items, tables and images.

    The body size is the (character-weighted) median line size; the usual
    gap between lines is the lower quartile of the gaps between lines; a
    paragraph breaks where the gap is clearly wider, the size changes, or the
    next line is not under the previous one. ``body`` overrides the body
    size (OCR passes the median over the whole page, tables included: line
    heights from OCR are noisy, and a page may have few body lines).
    """
    text_lines = [[b for b in ln if b.kind == "text"] for ln in lines]
    text_lines = [ln for ln in text_lines if ln]
    if body is None:
        body = _weighted_median([(_line_size(ln), _chars(ln)) for ln in text_lines])
    levels = _heading_levels([_line_size(ln) for ln in text_lines], body, ocr)
    gaps = [g for a, b in itertools.pairwise(text_lines)
            if _overlap(a, b) > 0 and -0.5 * body <= (g := _gap(a, b)) <= 2 * max(body, 1.0)]
    # The usual line gap: a low quantile, as short paragraphs make
    # paragraph gaps common (a median would take them for line gaps).
    usual = sorted(gaps)[len(gaps) // 4] if gaps else 0.3 * body
    max_gap = usual + 0.45 * body
    tol = 0.2 if ocr else 0.08
    out: list[Block] = []

    def continues(prev: Block | None, ln: list[Box], size: float, kinds: tuple[str, ...]) -> bool:
        if prev is None or prev.kind not in kinds or not prev.lines:
            return False
        last = prev.lines[-1]
        return (-0.3 * body <= _gap(last, ln) <= max_gap and _overlap(last, ln) > 0
                and abs(prev.size - size) <= tol * max(size, prev.size, 1.0))

    for raw in lines:
        if raw and raw[0].kind in ("table", "image"):
            out.append(Block(raw[0].kind, box=raw[0]))
            continue
        ln = [b for b in raw if b.kind == "text"]
        if not ln:
            continue
        size = _line_size(ln)
        prev = out[-1] if out else None
        level = next((i + 1 for i, f in enumerate(levels) if size >= f), 0)
        if level:
            if continues(prev, ln, size, ("heading",)) and prev is not None \
                    and prev.level == level:
                prev.lines.append(ln)
            else:
                out.append(Block("heading", [ln], size, min(level, 6)))
        elif _starts_item(ln, ocr):
            out.append(Block("item", [_strip_bullet(ln, ocr)], size))
        elif continues(prev, ln, size, ("para", "item")) and prev is not None:
            prev.lines.append(ln)
        else:
            out.append(Block("para", [ln], size))
    return out


def escape_cell(text: str) -> str:
    """A cell's text made safe for one markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def table_markdown(rows: Sequence[Sequence[str | None]]) -> str:
    """Rows of cells as a markdown table, the first row as header."""
    width = max((len(r) for r in rows), default=0)
    if not width:
        return ""
    norm = [[escape_cell(c or "") for c in r] + [""] * (width - len(r)) for r in rows]
    lines = ["| " + " | ".join(norm[0]) + " |", "|" + " --- |" * width]
    lines += ["| " + " | ".join(r) + " |" for r in norm[1:]]
    return "\n".join(lines)


def to_markdown(blks: Sequence[Block]) -> str:
    """Blocks as markdown: blank lines between blocks, list items kept together."""
    parts: list[str] = []
    for i, b in enumerate(blks):
        if b.kind == "table" and b.box is not None and b.box.rows:
            md = table_markdown(b.box.rows)
        elif b.kind == "image" and b.box is not None:
            md = b.box.text
        elif b.kind == "heading":
            md = "#" * b.level + " " + b.text
        elif b.kind == "item":
            md = "- " + b.text
        else:
            md = b.text
        if not md:
            continue
        sep = "\n" if (b.kind == "item" and i and blks[i - 1].kind == "item") else "\n\n"
        parts.append((sep if parts else "") + md)
    return "".join(parts).strip() + ("\n" if parts else "")


def layout_markdown(boxes: Sequence[Box], *, col_gap: float, ocr: bool = False,
                    body: float | None = None) -> str:
    """The whole chain: boxes to markdown."""
    if not boxes:
        return ""
    return to_markdown(blocks(reading_order(boxes, col_gap), ocr=ocr, body=body))


# ---------------------------------------------------------------------------
# Page images: skew and ruled tables
# ---------------------------------------------------------------------------


def deskew(img: Image.Image, max_angle: float = 3.0) -> tuple[Image.Image, float]:
    """``img`` (mode L) rotated upright, and the angle found (degrees, counter-clockwise).

    The angle maximises the variance of the row-sum differences of a small
    binarised copy: text lines and rules are sharpest when horizontal. A
    coarse pass (0.5 degree steps) then a fine one (0.1) around its best.
    """
    import numpy as np
    from PIL import Image as PILImage

    small = img.copy()
    small.thumbnail((700, 700))
    ink = small.point(lambda v: 255 if v < 140 else 0)

    def score(a: float) -> float:
        prof = np.asarray(ink.rotate(a, resample=PILImage.Resampling.NEAREST), dtype=np.float32)
        return float(np.var(np.diff(prof.sum(axis=1))))

    coarse = max((k * 0.5 for k in range(-int(max_angle * 2), int(max_angle * 2) + 1)),
                 key=score)
    best = max((coarse + k * 0.1 for k in range(-4, 5)), key=score)
    if abs(best) < 0.15:
        return img, 0.0
    return img.rotate(best, resample=PILImage.Resampling.BICUBIC, fillcolor=255), best


@dataclass
class Grid:
    """A ruled table found on a page image: its row and column boundaries (pixels)."""

    ys: list[int]
    xs: list[int]

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        return self.xs[0], self.ys[0], self.xs[-1], self.ys[-1]


def _run_windows(mask: np.ndarray, axis: int, k: int) -> np.ndarray:
    """True where a run of ``k`` True values of ``mask`` starts, along ``axis``."""
    import numpy as np

    c = np.cumsum(mask.astype(np.int32), axis=axis)
    pad = [(0, 0), (0, 0)]
    pad[axis] = (1, 0)
    c = np.pad(c, pad)
    win = c[:, k:] - c[:, :-k] if axis == 1 else c[k:, :] - c[:-k, :]
    return win >= k


def _centres(flags: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of each run of True in a 1-D array."""
    out: list[tuple[int, int]] = []
    start = -1
    for i, f in enumerate(flags.tolist()):
        if f and start < 0:
            start = i
        elif not f and start >= 0:
            out.append((start, i))
            start = -1
    if start >= 0:
        out.append((start, len(flags)))
    return out


def find_grids(gray: np.ndarray, dpi: int) -> list[Grid]:
    """Ruled tables on a page image (mode L array): horizontal rules, then the verticals between."""
    import numpy as np

    ink = gray < 128
    k = max(20, dpi // 3)  # a rule is a dark run of at least a third of an inch
    hlines = _centres(np.asarray(_run_windows(ink, 1, k).any(axis=1)))
    if len(hlines) < 2:
        return []
    # Horizontal extent of each rule, to group rules into tables.
    spans: list[tuple[int, int, int]] = []
    for a, b in hlines:
        if b - a > max(3, dpi // 25):
            continue  # a solid block (a photo, a bar), not a rule
        cols = np.where(_run_windows(ink[a:b], 1, k).any(axis=0))[0]
        if cols.size:
            spans.append(((a + b) // 2, int(cols.min()), int(cols.max()) + k))
    grids: list[Grid] = []
    group: list[tuple[int, int, int]] = []
    max_row = dpi * 2  # rows taller than two inches are not table rows

    def flush() -> None:
        if len(group) >= 2:
            g = _grid_from(ink, group, dpi)
            if g is not None:
                grids.append(g)

    for s in spans:
        # Rules of one table are close together and span (nearly) the same
        # columns; noise may nibble a rule's ends, so compare by overlap.
        prev = group[-1] if group else None
        overlap = min(s[2], prev[2]) - max(s[1], prev[1]) if prev else 0
        if prev and (s[0] - prev[0] > max_row
                     or overlap < 0.8 * min(s[2] - s[1], prev[2] - prev[1])):
            flush()
            group = []
        group.append(s)
    flush()
    return grids


def _grid_from(ink: np.ndarray, group: list[tuple[int, int, int]], dpi: int) -> Grid | None:
    import numpy as np

    ys = [g[0] for g in group]
    x0 = min(g[1] for g in group)
    x1 = max(g[2] for g in group)
    top, bottom = ys[0], ys[-1]
    region = ink[top:bottom + 1, max(0, x0 - 3):x1 + 3]
    # A vertical rule darkens (nearly) the whole height of the table.
    cover = np.asarray(region.mean(axis=0) >= 0.85)
    xs = [max(0, x0 - 3) + (a + b) // 2 for a, b in _centres(cover)]
    if len(xs) < 2:
        return None
    return Grid(ys=ys, xs=xs)


def fill_grid(grid: Grid, boxes: list[Box]) -> tuple[list[list[str]], list[Box]]:
    """The grid's cells filled with the ``boxes`` centred in them; and the boxes outside."""
    nrows, ncols = len(grid.ys) - 1, len(grid.xs) - 1
    cells: list[list[list[Box]]] = [[[] for _ in range(ncols)] for _ in range(nrows)]
    rest: list[Box] = []
    for b in boxes:
        r = _index(grid.ys, b.cy)
        c = _index(grid.xs, b.cx)
        if r is None or c is None:
            rest.append(b)
        else:
            cells[r][c].append(b)
    rows = [[_cell_text(cell) for cell in row] for row in cells]
    return rows, rest


def _cell_text(cell: list[Box]) -> str:
    # OCR reads the cell's rules as "|", "[" or "]" at its edges: not content.
    if not cell:
        return ""
    text = " ".join(" ".join(x.text for x in ln) for ln in _lines(cell))
    return _RULE_JUNK.sub(" ", f" {text} ").strip()


def _index(edges: list[int], v: float) -> int | None:
    for i in range(len(edges) - 1):
        if edges[i] <= v < edges[i + 1]:
            return i
    return None


def table_box(grid: Grid, rows: list[list[str]], size: float) -> Box:
    """A table placed as one block at the grid's position."""
    x0, y0, x1, y1 = grid.bbox
    return Box(float(x0), float(y0), float(x1), float(y1), kind="table", rows=rows, size=size)


def find_bullets(gray: np.ndarray, boxes: list[Box]) -> list[Box]:
    """Bullets that OCR left out: a small filled dot just left of a text box.

    RapidOCR's detector skips lone dots, so a bulleted list would come out as
    plain paragraphs; the dot is still on the image. Tesseract reads it (as
    some punctuation), and then the place is taken by that box: no double.
    """
    import numpy as np

    found: list[Box] = []
    height, width = gray.shape[:2]
    for b in boxes:
        h = b.height
        if h < 8:
            continue
        x0, x1 = int(max(0, b.x0 - 2.0 * h)), int(max(0, b.x0 - 0.1 * h))
        y0, y1 = int(max(0, b.y0 + 0.1 * h)), int(min(height, b.y1 - 0.1 * h))
        if x1 - x0 < 3 or y1 - y0 < 3 or x0 >= width:
            continue
        if any(o is not b and o.x1 > x0 and o.x0 < x1 and o.y1 > y0 and o.y0 < y1
               for o in boxes):
            continue
        ink = gray[y0:y1, x0:x1] < 128
        if not ink.any():
            continue
        # Keep only pixels with ink around them: dust specks go, a dot stays.
        pad = np.pad(ink, 1).astype(np.int8)
        around = sum(pad[1 + dy:pad.shape[0] - 1 + dy, 1 + dx:pad.shape[1] - 1 + dx]
                     for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        ink = ink & (around >= 5)
        if not ink.any():
            continue
        ys, xs = np.nonzero(ink)
        bw, bh = int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)
        area = int(ink.sum())
        if bw <= 0.5 * h and bh <= 0.5 * h and area >= (0.08 * h) ** 2 and area >= 0.5 * bw * bh:
            found.append(Box(float(x0 + xs.min()), b.y0, float(x0 + xs.max() + 1), b.y1, "•",
                             size=b.size, conf=b.conf))
    return found

