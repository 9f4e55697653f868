"""Tables and figures. Grows with the pipeline: every table and figure of the paper is regenerated here."""
from __future__ import annotations

import json
import logging
import textwrap
from importlib import resources
from pathlib import Path
from typing import Sequence

# Scripts our captions use and fonts that cover them, in the order matplotlib should try them.
_FONT_FALLBACK = ["DejaVu Sans", "Noto Sans", "Noto Sans CJK TC", "Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans Arabic",
                  "Noto Naskh Arabic", "WenQuanYi Zen Hei", "Droid Sans Fallback"]


def fetch_counts(summary: dict) -> dict:
    """Flatten fetch's stats into {name: count} for a DVC metric."""
    stats = summary.get("stats") or {}
    out = {}

    def walk(prefix, v):
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), x)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[prefix] = v
    walk("", stats)
    return out


def as_frame(counts: dict):
    import pandas as pd
    return pd.DataFrame(sorted(counts.items()), columns=["what", "count"]).set_index("what")


def _fonts():
    """Font list for multi-script captions (the pinned Noto CJK wheel is registered with matplotlib)."""
    from matplotlib import font_manager
    try:
        otf = resources.files("cvttf_NotoSansCJK_Regular").joinpath("NotoSansCJKtc-Regular.otf")
        font_manager.fontManager.addfont(str(otf))
    except (ModuleNotFoundError, FileNotFoundError):
        pass
    have = {f.name for f in font_manager.fontManager.ttflist}
    fonts = [f for f in _FONT_FALLBACK if f in have] or ["DejaVu Sans"]
    if not any("CJK" in f or "Hei" in f or "Fallback" in f for f in fonts):
        logging.getLogger("mblip").warning(
            "no CJK font found: Chinese/Japanese captions in figures show as boxes "
            "(Debian/Ubuntu: apt install fonts-noto-cjk)")
    return fonts


def display_text(text: str) -> str:
    """Text as matplotlib should draw it: Arabic letters in their joined forms. (matplotlib orders
    right-to-left runs itself but does not join letters)"""
    if any("\u0600" <= ch <= "\u06ff" for ch in text):
        import arabic_reshaper
        return arabic_reshaper.reshape(text)
    return text


def sample_grid(captions_jsonl: Path, image_dir: Path, langs: Sequence[str] | None, n: int = 6):
    """Images with one reference caption per language, from a captions file in XM3600's format
    (``{"image/key": id, "<lang>": {"caption": [...]}}``) — the demo world's and the real benchmark's."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    rows = [json.loads(l) for l in Path(captions_jsonl).read_text(encoding="utf-8").splitlines()[:n]]
    if not rows:
        raise ValueError(f"{captions_jsonl}: no captions to show")
    langs = [l for l in (langs or []) if l in rows[0]] or [k for k in rows[0] if k != "image/key"]
    fonts = _fonts()
    fig, axes = plt.subplots(1, len(rows), figsize=(2.6 * len(rows), 1.2 + 0.42 * len(langs)), squeeze=False)
    for ax, row in zip(axes[0], rows):
        key = row["image/key"]
        path = next((p for p in (image_dir / f"{key}.png", image_dir / f"{key}.jpg") if p.exists()), None)
        if path is None:
            raise FileNotFoundError(f"image of {key} not found in {image_dir} (expected {key}.png or .jpg)")
        ax.imshow(Image.open(path).convert("RGB"))
        ax.set_xticks([]), ax.set_yticks([])
        text = "\n".join(f"{l}: " + display_text(textwrap.shorten(row[l]["caption"][0], 44)) for l in langs)
        ax.set_xlabel(text, fontsize=6.5, loc="left", fontfamily=fonts, linespacing=1.25)
        ax.set_title(key, fontsize=7)
    fig.tight_layout()
    return fig
