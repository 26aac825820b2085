"""Attribution heatmaps: a self-contained HTML page and a PNG image (Pillow, with a real CJK font).

Red means the character raised the explained score, blue that it lowered it; the colour's strength is
the normalised attribution in [-1, 1].
"""

from __future__ import annotations

import functools
import html
import importlib.util
import io
import threading
from pathlib import Path

from app.runtime.errors import Unavailable

POSITIVE, NEGATIVE = (214, 39, 40), (31, 119, 180)
# Where CJK fonts live: Debian's fonts-noto-cjk / fonts-wqy-microhei, then the mplfonts package (`.[png]`).
FONT_GLOBS = ("/usr/share/fonts/**/NotoSansCJK*-Regular.tt[cf]", "/usr/share/fonts/**/NotoSansCJK*.otf",
              "/usr/share/fonts/**/wqy-microhei.ttc", "/usr/share/fonts/**/wqy-zenhei.ttc",
              "/usr/share/fonts/**/SourceHanSans*.otf")
PER_LINE = 24


def colour(value: float) -> tuple[int, int, int]:
    """White at 0, towards red for positive and blue for negative values in [-1, 1]."""
    end = POSITIVE if value >= 0 else NEGATIVE
    t = min(abs(value), 1.0)
    return tuple(round(255 + (c - 255) * t) for c in end)


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _title(result: dict) -> str:
    t = result["target"]
    if "question" in t:  # qa: the question's characters come first, then the passage's
        return f"{t['question']} → {t['answer']}"
    return f"{t['subject']} —{t['predicate']}→ {t['object']['@value']}" if "predicate" in t else t["subject"]


def render_html(result: dict) -> str:
    cells = "".join(
        f'<span class="c" style="background:{_hex(colour(v))}" title="{a:+.4f}">{html.escape(ch)}</span>'
        for ch, v, a in zip(result["characters"], result["normalized"], result["attributions"], strict=True))
    legend = "".join(f'<span style="background:{_hex(colour(v / 4))}">{v / 4:+.2f}</span>' for v in range(-4, 5))
    return f"""<!doctype html>
<html lang="zh"><head><meta charset="utf-8"><title>zhserve explanation</title>
<style>
body {{ font-family: "Noto Sans CJK SC", "PingFang SC", "Microsoft YaHei", sans-serif; margin: 2em; color: #222; }}
.c {{ display: inline-block; min-width: 1.4em; padding: .25em .1em; margin: 1px; text-align: center;
      font-size: 1.6em; border-radius: 3px; }}
.legend span {{ display: inline-block; width: 4em; text-align: center; font-size: .8em; padding: .2em 0; }}
table {{ border-collapse: collapse; margin-top: 1em; font-size: .9em; }} td {{ padding: .1em .8em .1em 0; }}
</style></head><body>
<h2>{html.escape(_title(result))}</h2>
<p>explained score: {html.escape(result["target"]["score_explained"])}</p>
<div>{cells}</div>
<p class="legend">normalised attribution: {legend}<br>red raised the score, blue lowered it
(hover a character for its attribution)</p>
<table>
<tr><td>model</td><td>{html.escape(str(result["model"]))} v{html.escape(str(result["version"]))}</td></tr>
<tr><td>score F(x)</td><td>{result["score"]:.4f}</td></tr>
<tr><td>baseline score F(x')</td>
    <td>{result["baseline_score"]:.4f} ({html.escape(result["baseline"])} embeddings)</td></tr>
<tr><td>completeness delta</td><td>{result["delta"]:+.2e} (sum of attributions minus F(x) - F(x'))</td></tr>
<tr><td>integration</td><td>{result["steps"]} steps, {html.escape(result["method"])}</td></tr>
</table></body></html>
"""


@functools.lru_cache(maxsize=1)
def cjk_font_path() -> Path:
    for pattern in FONT_GLOBS:
        found = sorted(Path("/").glob(pattern.lstrip("/")))
        if found:
            return found[0]
    spec = importlib.util.find_spec("mplfonts")  # finds the package without importing it (and matplotlib)
    if spec and spec.submodule_search_locations:
        candidate = Path(spec.submodule_search_locations[0]) / "fonts" / "NotoSansCJKsc-Regular.otf"
        if candidate.exists():
            return candidate
    raise Unavailable("format png needs a CJK font: install zhserve with the `png` extra, or the Debian package "
                      "fonts-noto-cjk; format html needs none")


@functools.lru_cache(maxsize=8)
def cjk_font(size: int):
    """The CJK font at `size` points, read once (the file is 16 MB)."""
    from PIL import ImageFont

    return ImageFont.truetype(str(cjk_font_path()), size)


_FONT_LOCK = threading.Lock()  # a FreeType face is not safe to share between threads


def render_png(result: dict, cell: int = 40) -> bytes:
    with _FONT_LOCK:
        return _render_png(result, cell)


def _render_png(result: dict, cell: int) -> bytes:
    from PIL import Image, ImageDraw

    big, small = cjk_font(int(cell * 0.7)), cjk_font(15)
    chars, values = result["characters"], result["normalized"]
    lines = max(1, -(-len(chars) // PER_LINE))
    margin, header, legend_h = 16, 76, 54
    width = max(2 * margin + min(len(chars), PER_LINE) * cell, 640)
    height = header + lines * (cell + 6) + legend_h + margin
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((margin, 8), _title(result), font=cjk_font(18), fill=(20, 20, 20))
    draw.text((margin, 34), f"score = {result['target']['score_explained']} (pointer log-probabilities)", font=small,
              fill=(90, 90, 90))
    draw.text((margin, 52), f"F(x) {result['score']:.3f}   F(x') {result['baseline_score']:.3f}   "
                            f"delta {result['delta']:+.1e}   {result['steps']} steps {result['method']}",
              font=small, fill=(90, 90, 90))
    for i, (ch, v) in enumerate(zip(chars, values, strict=True)):
        x = margin + (i % PER_LINE) * cell
        y = header + (i // PER_LINE) * (cell + 6)
        draw.rectangle((x, y, x + cell - 2, y + cell - 2), fill=colour(v))
        draw.text((x + cell / 2 - 1, y + cell / 2 - 1), ch, font=big, fill=(0, 0, 0), anchor="mm")
    y = height - legend_h
    bar_w = width - 2 * margin - 120
    for k in range(bar_w):
        v = -1 + 2 * k / (bar_w - 1)
        draw.line((margin + 60 + k, y + 8, margin + 60 + k, y + 24), fill=colour(v))
    for v, label in ((-1, "-1 lowered"), (0, "0"), (1, "+1 raised")):
        draw.text((margin + 60 + (v + 1) / 2 * bar_w, y + 38), label, font=small, fill=(60, 60, 60), anchor="mm")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
