"""Looking at a trained model's outputs: greedy captions and answers on held-out demo scenes (the realign
notebook's samples) and on any image file, in any language (the tour notebook).

    model = realign.load_model(cfg, "realign")
    tour.describe_image(cfg, model, "my_photo.jpg", "de")      # {"caption", "question", "answer", "prompts", ...}
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from mblip.config import Config
from mblip.realign import FileFeatures, Features, make_generate
from mblip.stages import _root, data_dir


# ------------------------------------------------------------------------------------------------ samples
def sample_outputs(cfg: Config, model, n_scenes: int = 4, langs: Sequence[str] | None = None) -> list[dict]:
    """Greedy captions and answers on the first held-out test scenes, in several languages (for the notebook)."""
    from mblip import templates as T
    root, data = _root(cfg), data_dir(cfg)
    langs = [l for l in (langs or cfg.languages.use or ["en"]) if l in T.XM3600_LANGUAGE_NAMES]
    lines = (data / "eval/xm3600/captions.jsonl").read_text(encoding="utf-8").splitlines()
    caps = [json.loads(l) for l in lines[:n_scenes]]
    gen = make_generate(model, Features(root))
    greedy_caption, greedy_short = greedy(30), greedy(10)
    rows = []
    for lang in langs:
        qs = json.loads((data / f"eval/xgqa/{lang}/test.json").read_text(encoding="utf-8")) \
            if (data / f"eval/xgqa/{lang}/test.json").exists() else {}
        first_q = {}
        for q in qs.values():
            first_q.setdefault(q["imageId"], q)
        for c in caps:
            key = c["image/key"]
            img = [Path(f"images/{key}.png")]
            caption = gen([img], [T.eval_prompt("xm3600", lang)], greedy_caption)[0]
            row = {"image": key, "lang": lang, "caption": caption, "reference": c[lang]["caption"][0]}
            if key in first_q:
                q = first_q[key]
                answer = gen([img], [T.eval_prompt("xgqa", q["question"])], greedy_short)[0]
                row |= {"question": q["question"], "answer": answer, "gold": q["answer"]}
            rows.append(row)
    return rows


def show_samples(cfg: Config, rows: list[dict]):
    """The sample scenes as images, and the outputs as a table."""
    import matplotlib.pyplot as plt
    import pandas as pd
    from PIL import Image
    keys = list(dict.fromkeys(r["image"] for r in rows))
    fig, axes = plt.subplots(1, len(keys), figsize=(2.2 * len(keys), 2.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        ax.imshow(Image.open(data_dir(cfg) / "images" / f"{key}.png"))
        ax.set_title(key, fontsize=8)
        ax.axis("off")
    plt.show()
    return pd.DataFrame(rows).set_index(["image", "lang"]).sort_index()


# ------------------------------------------------------------------------------------------------ any image
def greedy(max_new_tokens: int):
    """Greedy decoding with a cap on new tokens (the samples, the tour and your own data)."""
    from mblip.evaluate import Decoding
    return Decoding(num_beams=1, max_new_tokens=max_new_tokens, length_penalty=1.0)


def demo_image(cfg: Config, index: int = 0) -> Path:
    """A held-out image of the demo world (the ``index``-th test scene, never trained on)."""
    found = sorted((data_dir(cfg) / "images").glob("test-*.png"))
    if not found:
        raise FileNotFoundError(f"no held-out test images in {data_dir(cfg) / 'images'}: run `mblip fetch` (demo "
                                f"preset), or pass the path of an image of your own")
    return found[index % len(found)]


def resolve_path(cfg: Config, path: str | Path) -> Path:
    """A user-given file path: absolute, or relative to the working directory, else to the repository root."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return _root(cfg) / p


def default_question(lang: str) -> str:
    """A question that fits any picture ("How many objects are there?"), realised in ``lang`` by the demo world's
    realisers; in English for a language they do not have."""
    from mblip.demo.realise import LANGUAGES, NP, QCount, realise
    return realise(QCount(NP()), lang if lang in LANGUAGES else "en")


def caption_prompt(lang: str) -> str:
    """XM3600's evaluation prompt for ``lang`` ("Caption in German: "); for a language XM3600 lacks, the same
    prompt with the name from the paper's language table."""
    from mblip import languages as L
    from mblip import templates as T
    try:
        return T.eval_prompt("xm3600", lang)
    except KeyError:
        return T.EVAL_PROMPTS["xm3600"].format(L.get(lang).name)


def describe_image(cfg: Config, model, image: str | Path, lang: str = "en", question: str = "") -> dict:
    """Caption any image file in ``lang`` (XM3600's eval prompt) and answer ``question`` about it (xGQA's eval
    prompt; empty = `default_question` in ``lang``), greedy decoding. The ViT features come from
    `features_for_images`, so a demo-world image gets exactly the features the evaluation used."""
    from mblip import templates as T
    path = resolve_path(cfg, image)
    gen = make_generate(model, FileFeatures(cfg, [path]))
    question = question.strip() or default_question(lang)
    prompts = {"caption": caption_prompt(lang), "answer": T.eval_prompt("xgqa", question)}
    return {"image": str(path), "lang": lang,
            "caption": gen([[path]], [prompts["caption"]], greedy(30))[0],
            "question": question,
            "answer": gen([[path]], [prompts["answer"]], greedy(10))[0],
            "prompts": prompts}


def show_image(path: str | Path, title: str = "", size: float = 3.0):
    """One image, enlarged without smoothing (the demo's scenes are 64 px)."""
    import matplotlib.pyplot as plt
    from PIL import Image
    with Image.open(path) as im:
        fig, ax = plt.subplots(figsize=(size, size))
        ax.imshow(im.convert("RGB"), interpolation="nearest")
    ax.set_title(title or Path(path).name, fontsize=9)
    ax.axis("off")
    plt.show()
