"""Write the demo world to disk: images, scene graphs, train-mix annotations, eval sets.

`build_world(out_dir, ...)` is deterministic: two builds with the same arguments give
byte-identical files (PNG without timestamps, JSON with sorted keys, fixed order). It owns
the paths it writes (below) and removes them first, so a smaller rebuild leaves nothing
stale behind; anything else in `out_dir` is left alone.

Layout (paths relative to `out_dir`):

    images/<scene_id>.png                 RGB, image_size x image_size
    scenes.jsonl                          one scene graph per line (train, val, test order)
        {"id": "train-000000", "split": "train", "objects": [{"colour": "red", "position": "left",
         "shape": "circle", "size": "large", "y": 0.431}, ...]}
    annotations/<split>/<task>.jsonl      train-mix tasks: caption vqa vqg match classify verify describe
        {"id": "train-000000-vqa0", "image": "images/train-000000.png", "task": "vqa",
         "en": {"question": "What colour is the circle?", "answer": "red"},
         "gold": {"de": {"question": "Welche Farbe hat der Kreis?", "answer": "rot"}, ...},
         "meta": {"qtype": "colour", "structural": "query", "semantic": "attr", "answer_type": "colour"}}
        fields per task: annotate.TASK_FIELDS; "gold" holds every requested language (English too).
    eval/  -- the benchmarks' official formats (eval-suite.md §2-§5), so one evaluator reads demo and real data
        xgqa/<lang>/test.json             test split; GQA dict, answers in English:
            {"test-000004-q0": {"imageId": "test-000004", "question": "Wo ist der rote Kreis?",
             "answer": "left", "isBalanced": true, "types": {"detailed": "where", "semantic": "rel",
             "structural": "query"}}, ...}
        xgqa/<lang>/dev.json              the same for the val split (model selection)
        gqa/train.json, gqa/dev.json      English fine-tuning data (train / val split), LXMERT format:
            [{"img_id": "train-000000", "label": {"red": 1.0}, "question_id": "train-000000-q0",
              "sent": "What colour is the circle?"}, ...]
        xvnli/<lang>/test.jsonl           test split, one row per hypothesis:
            {"Flikr30kID": "test-000004", "captionID": "test-000004#0", "gold_label": "entailment",
             "pairID": "test-000004#0r0e", "sentence1": <caption in lang>, "sentence2": <hypothesis in lang>}
        xvnli/<lang>/dev.jsonl            val split (every language)
        xvnli/en/train.jsonl              train split, English, rows also carry "annotator_labels": [label]
        marvl/marvl-<lang>.jsonl          test split pairs:
            {"caption": <statement in lang>, "concept": "more", "id": "de-0", "label": true,
             "language": "de", "left_img": "test-000012.png", "right_img": "test-000007.png", "chapter": "demo"}
        nlvr2/train.jsonl, nlvr2/dev.jsonl  English (train / val split), NLVR2 style:
            {"identifier": "train-0", "label": "True", "left_img": "train-000003.png",
             "right_img": "train-000011.png", "sentence": "...", "synset": "more"}
        nlvr2/dev-<lang>.jsonl            val split in the other languages (gold, where IGLUE has MT)
        xm3600/captions.jsonl             test split, XM3600 format, 3 references per language:
            {"image/key": "test-000004", "image/locale": "en", "en": {"caption": [...]}, "de": {...}, ...}
        xm3600/captions-val.jsonl         the same for the val split
    manifest.json                         build arguments and the stats below

Image file names in eval files are relative to `images/` (MaRVL/NLVR2 name files, GQA/XVNLI ids).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from . import annotate
from .realise import get_realiser
from .world import Scene, make_scenes, render

SPLITS: tuple[str, ...] = ("train", "val", "test")
_OWNED = ("images", "annotations", "eval", "scenes.jsonl", "manifest.json")
_NLI_INDEX = {label: i for i, label in enumerate(annotate.NLI_LABELS)}


def _text(record: dict, lang: str) -> dict:
    """A record's text fields in `lang` (English train-only records carry no "gold")."""
    return record["en"] if lang == "en" else record["gold"][lang]


def _write_jsonl(path: Path, rows: Sequence[dict]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    return len(rows)


def _write_json(path: Path, obj) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        json.dump(obj, f, ensure_ascii=False, sort_keys=True, indent=1)
        f.write("\n")
    return len(obj)


def _xgqa(records: list[dict], lang: str) -> dict:
    return {
        r["id"]: {
            "imageId": r["scene"],
            "question": r["gold"][lang]["question"],
            "answer": r["en"]["answer"],  # xGQA keeps English answers in every language
            "isBalanced": True,
            "types": {"detailed": r["meta"]["qtype"], "semantic": r["meta"]["semantic"],
                      "structural": r["meta"]["structural"]},
        }
        for r in records
    }


def _lxmert(records: list[dict]) -> list[dict]:
    return [{"img_id": r["scene"], "label": {r["en"]["answer"]: 1.0}, "question_id": r["id"],
             "sent": r["en"]["question"]} for r in records]


def _xvnli(records: list[dict], lang: str, train: bool = False) -> list[dict]:
    rows = []
    for r in records:
        scene, label = r["scene"], r["label"]
        text = _text(r, lang)
        row = {"Flikr30kID": scene, "captionID": f"{scene}#0", "gold_label": label,
               "pairID": f"{scene}#0r{_NLI_INDEX[label]}{label[0]}",
               "sentence1": text["premise"], "sentence2": text["hypothesis"]}
        if train:
            row["annotator_labels"] = [label]
        rows.append(row)
    return rows


def _marvl(records: list[dict], lang: str) -> list[dict]:
    return [{"caption": _text(r, lang)["statement"],
             "chapter": "demo", "concept": r["meta"]["kind"], "id": f"{lang}-{i}", "label": r["label"],
             "language": lang, "left_img": f"{r['left']}.png", "right_img": f"{r['right']}.png"}
            for i, r in enumerate(records)]


def _nlvr2(records: list[dict], split: str, lang: str = "en") -> list[dict]:
    return [{"identifier": f"{split}-{i}", "label": str(r["label"]), "left_img": f"{r['left']}.png",
             "right_img": f"{r['right']}.png", "sentence": _text(r, lang)["statement"],
             "synset": r["meta"]["kind"]}
            for i, r in enumerate(records)]


def _xm3600(records: list[dict], languages: Sequence[str]) -> list[dict]:
    rows = []
    for r in records:
        row = {"image/key": r["id"], "image/locale": "en"}
        row.update({lang: {"caption": _text(r, lang)} for lang in languages})
        rows.append(row)
    return rows


def build_world(out_dir: Path, *, n_train: int, n_val: int, n_test: int, image_size: int, max_objects: int,
                seed: int, languages: Sequence[str]) -> dict:
    """Render and annotate the demo world into `out_dir`; returns counts per file (see module doc)."""
    out_dir = Path(out_dir)
    languages = tuple(dict.fromkeys(languages))  # de-duplicate, keep order
    for lang in languages:
        get_realiser(lang)  # fails early, listing the supported codes
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    for split, n in sizes.items():
        if n < 2:
            raise ValueError(f"n_{split} must be >= 2 (two-image tasks pair scenes), got {n}")

    out_dir.mkdir(parents=True, exist_ok=True)
    for name in _OWNED:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()

    scenes: dict[str, list[Scene]] = {split: make_scenes(n, split, seed, max_objects) for split, n in sizes.items()}
    files: dict[str, int] = {}

    def put(rel: str, count: int):
        files[rel] = count

    # images and scene graphs
    (out_dir / "images").mkdir()
    every = [s for split in SPLITS for s in scenes[split]]
    for s in tqdm(every, desc="render demo images", unit="img"):
        render(s, size=image_size, seed=seed).save(out_dir / annotate.image_path(s.id), format="PNG")
    put("images", len(every))
    put("scenes.jsonl", _write_jsonl(out_dir / "scenes.jsonl", [s.to_dict() for s in every]))

    # train-mix annotations, every split
    for split in SPLITS:
        for task in tqdm(annotate.TRAIN_TASKS, desc=f"annotate {split}", unit="task"):
            rows = annotate.TRAIN_GENERATORS[task](scenes[split], seed, languages)
            rel = f"annotations/{split}/{task}.jsonl"
            put(rel, _write_jsonl(out_dir / rel, rows))

    # evaluation analogues in official formats
    ev = out_dir / "eval"
    gqa = {split: annotate.gqa(scenes[split], seed, languages) for split in ("val", "test")}
    gqa["train"] = annotate.gqa(scenes["train"], seed, ())  # English only: the fine-tuning source
    nli = {split: annotate.nli(scenes[split], seed, languages) for split in ("val", "test")}
    nli["train"] = annotate.nli(scenes["train"], seed, ())
    pairs = {split: annotate.two_image(scenes[split], seed, languages) for split in ("val", "test")}
    pairs["train"] = annotate.two_image(scenes["train"], seed, ())
    caps = {split: annotate.multi_ref_captions(scenes[split], seed, languages) for split in ("val", "test")}

    for lang in languages:
        put(f"eval/xgqa/{lang}/test.json", _write_json(ev / f"xgqa/{lang}/test.json", _xgqa(gqa["test"], lang)))
        put(f"eval/xgqa/{lang}/dev.json", _write_json(ev / f"xgqa/{lang}/dev.json", _xgqa(gqa["val"], lang)))
        put(f"eval/xvnli/{lang}/test.jsonl", _write_jsonl(ev / f"xvnli/{lang}/test.jsonl", _xvnli(nli["test"], lang)))
        put(f"eval/xvnli/{lang}/dev.jsonl", _write_jsonl(ev / f"xvnli/{lang}/dev.jsonl", _xvnli(nli["val"], lang)))
        put(f"eval/marvl/marvl-{lang}.jsonl", _write_jsonl(ev / f"marvl/marvl-{lang}.jsonl", _marvl(pairs["test"], lang)))
        if lang != "en":
            rel = f"eval/nlvr2/dev-{lang}.jsonl"
            put(rel, _write_jsonl(out_dir / rel, _nlvr2(pairs["val"], "dev", lang)))
    put("eval/gqa/train.json", _write_json(ev / "gqa/train.json", _lxmert(gqa["train"])))
    put("eval/gqa/dev.json", _write_json(ev / "gqa/dev.json", _lxmert(gqa["val"])))
    put("eval/xvnli/en/train.jsonl", _write_jsonl(ev / "xvnli/en/train.jsonl", _xvnli(nli["train"], "en", train=True)))
    put("eval/nlvr2/train.jsonl", _write_jsonl(ev / "nlvr2/train.jsonl", _nlvr2(pairs["train"], "train")))
    put("eval/nlvr2/dev.jsonl", _write_jsonl(ev / "nlvr2/dev.jsonl", _nlvr2(pairs["val"], "dev")))
    put("eval/xm3600/captions.jsonl", _write_jsonl(ev / "xm3600/captions.jsonl", _xm3600(caps["test"], languages)))
    put("eval/xm3600/captions-val.jsonl",
        _write_jsonl(ev / "xm3600/captions-val.jsonl", _xm3600(caps["val"], languages)))

    stats = {"scenes": {split: len(scenes[split]) for split in SPLITS}, "languages": list(languages), "files": files}
    params = {"n_train": n_train, "n_val": n_val, "n_test": n_test, "image_size": image_size,
              "max_objects": max_objects, "seed": seed, "languages": list(languages)}
    _write_json(out_dir / "manifest.json", {"params": params, "stats": stats})
    return stats


__all__ = ["SPLITS", "build_world"]
