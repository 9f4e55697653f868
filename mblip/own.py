"""Fine-tuning on your own data: JSONL files in the task-mix record schema ``{id, image, lang, task, prompt,
target}`` (`mblip.taskmix.validate_jsonl`), the finetune stage's training on top of the merged model, and scores
before and after (the finetune_own notebook).

    train, ev = own.example_own_jsonl(cfg, "models/own/example")   # or files of your own
    run = own.finetune_own(cfg, train, ev, steps=50)                # run["scores"]["before" / "after"]
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from mblip.config import Config
from mblip.realign import FileFeatures, _finetune_optim, _train, make_generate, merged_for_finetune
from mblip.stages import _root, data_dir, write_json
from mblip.tour import greedy, resolve_path


# ------------------------------------------------------------------------------------------------ your own data
def example_own_jsonl(cfg: Config, out_dir: str | Path, n_train: int = 16, n_eval: int = 8,
                      langs: Sequence[str] | None = None) -> tuple[Path, Path]:
    """Write ``train.jsonl`` and ``eval.jsonl`` in the task-mix record schema into ``out_dir``: questions of the
    demo world's xGQA analogue about its held-out *test* scenes (never trained on), the first half of the scenes
    for training and the second half for evaluation (no image in both), up to ``n_train`` / ``n_eval`` records per
    language spread over the scenes, with xGQA's eval prompt and the gold answer as target. Returns the two paths."""
    from mblip import templates as T
    data = data_dir(cfg)
    langs = list(langs or cfg.languages.use or ["en"])
    if cfg.data.source != "demo":
        raise FileNotFoundError(f"the example files come from the demo world, but data.source is "
                                f"{cfg.data.source!r}: pass train_jsonl and eval_jsonl of your own")
    scenes = sorted(p.stem for p in (data / "images").glob("test-*.png"))
    if len(scenes) < 2:
        raise FileNotFoundError(f"no held-out test scenes in {data / 'images'}: run `mblip fetch`")
    half = set(scenes[:len(scenes) // 2])
    out, rows = Path(out_dir), {"train": [], "eval": []}
    for lang in langs:
        f = data / "eval/xgqa" / lang / "test.json"
        if not f.exists():
            continue
        got = {"train": 0, "eval": 0}
        questions = list(json.loads(f.read_text(encoding="utf-8")).items())
        seen: dict[str, int] = {}
        order = []  # the first question of every scene, then the second, ...: spread over the scenes
        for i, (_, q) in enumerate(questions):
            seen[q["imageId"]] = seen.get(q["imageId"], -1) + 1
            order.append((seen[q["imageId"]], i))
        for _, i in sorted(order):
            qid, q = questions[i]
            split = "train" if q["imageId"] in half else "eval"
            if got[split] < (n_train if split == "train" else n_eval):
                got[split] += 1
                rows[split].append({"id": f"{qid}-{lang}", "image": f"images/{q['imageId']}.png", "lang": lang,
                                    "task": "vqa", "prompt": T.eval_prompt("xgqa", q["question"]),
                                    "target": q["answer"]})
    if not rows["train"] or not rows["eval"]:
        raise FileNotFoundError(f"no xGQA test questions under {data / 'eval/xgqa'} for {langs}: run `mblip fetch`")
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "train.jsonl", out / "eval.jsonl"
    for path, split in zip(paths, ("train", "eval")):
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[split]), encoding="utf-8")
    return paths


def _own_records(cfg: Config, path: str | Path) -> tuple[list[dict], list[Path]]:
    """Validated records of a user's JSONL and each record's image file (relative paths: beside the JSONL file,
    then under the data folder, then under the repository root)."""
    from mblip.taskmix import resolve_image, validate_jsonl
    path = resolve_path(cfg, path)
    roots = [path.parent, data_dir(cfg), _root(cfg)]
    records = validate_jsonl(path, image_roots=roots)
    return records, [resolve_image(r["image"], roots) for r in records]


def predict_own(model, records: list[dict], images: list[Path], feats, max_new_tokens: int,
                batch_size: int = 64) -> list[str]:
    """Greedy outputs of ``model`` for records of the task-mix schema (their own prompts)."""
    gen = make_generate(model, feats, batch_size=batch_size)
    return gen([[p] for p in images], [r["prompt"] for r in records], greedy(max_new_tokens))


def score_own(records: list[dict], preds: list[str]) -> dict:
    """Exact match (xGQA's: `metrics.exact_match_accuracy`) and token F1 (`metrics.token_f1`) per language and
    over all records: ``{lang: {"n", "exact_match", "token_f1"}, ..., "all": {...}}``."""
    from mblip import metrics as M
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(r["lang"], []).append(i)
    groups = {**dict(sorted(groups.items())), "all": list(range(len(records)))}
    out = {}
    for lang, idx in groups.items():
        p, g, l = [preds[i] for i in idx], [records[i]["target"] for i in idx], [records[i]["lang"] for i in idx]
        out[lang] = {"n": len(idx), "exact_match": M.exact_match_accuracy(p, g), "token_f1": M.token_f1(p, g, l)}
    return out


def finetune_own(cfg: Config, train_jsonl: str | Path, eval_jsonl: str | Path, *, steps: int, lr: float | None = None,
                 out_dir: str | Path = "models/own", batch_size: int | None = None,
                 max_new_tokens: int | None = None) -> dict:
    """Fine-tune the merged re-aligned model on your own records, as the finetune stage does (a new LoRA on
    ``models/merged``, the same training loop and settings of ``finetune``), and score it on ``eval_jsonl`` before
    and after: exact match and token F1 per language (`score_own`), greedy decoding.

    train_jsonl, eval_jsonl: JSONL in the task-mix record schema ``{id, image, lang, task, prompt, target}``, any
        language; every line is checked (`taskmix.validate_jsonl`) and every image found before anything loads.
        ``image``: an absolute path, or relative to the JSONL file's folder, the data folder or the repository.
    steps: optimizer steps. lr: peak LR of Q-Former, projection and LoRA (None = ``finetune.lr.xgqa``).
    out_dir: relative to the repository root; gets ``final/`` (the weights: ``load_model(cfg, "own")``), the
        checkpoints, ``history.csv``, ``train.json``, ``predictions.jsonl`` and ``scores.json``. Training starts
        over each call (old checkpoints in ``out_dir`` are deleted).
    batch_size: examples per step (None = ``finetune.batch_size.xgqa``, at most the training set).
    max_new_tokens: None = the longest evaluation target in tokens + 4, at most ``finetune.max_len``.
    """
    ft = cfg.finetune
    root = _root(cfg)
    out = Path(out_dir) if Path(out_dir).is_absolute() else root / out_dir
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    train_recs, train_imgs = _own_records(cfg, train_jsonl)
    eval_recs, eval_imgs = _own_records(cfg, eval_jsonl)
    feats = FileFeatures(cfg, train_imgs + eval_imgs)
    model = merged_for_finetune(cfg)
    if max_new_tokens is None:
        longest = max(len(model.tokenizer(r["target"], add_special_tokens=False).input_ids) for r in eval_recs)
        max_new_tokens = max(1, min(ft.max_len, longest + 4))
    before = predict_own(model, eval_recs, eval_imgs, feats, max_new_tokens, cfg.eval.batch_size)

    batch = min(batch_size or ft.batch_size.get("xgqa", 32), len(train_recs))
    micro = min(ft.micro_batch_size, batch)
    batch -= batch % micro
    lr = ft.lr.get("xgqa", 3e-5) if lr is None else float(lr)
    examples = [{"image_embeds": feats(p), "prompt": r["prompt"], "target": r["target"]}
                for r, p in zip(train_recs, train_imgs)]
    opt = _finetune_optim(cfg, batch, steps, micro_batch=micro, warmup_steps=min(ft.warmup_steps, steps // 10))
    hist = _train(cfg, model, examples, opt, out, "own", lr_qformer=lr, lr_lora=lr,
                  history_path=out / "history.csv", metrics_path=out / "train.json", resume=False)
    after = predict_own(model, eval_recs, eval_imgs, feats, max_new_tokens, cfg.eval.batch_size)

    scores = {"before": score_own(eval_recs, before), "after": score_own(eval_recs, after)}
    with open(out / "predictions.jsonl", "w", encoding="utf-8") as f:
        for r, b, a in zip(eval_recs, before, after):
            f.write(json.dumps({"id": r["id"], "lang": r["lang"], "target": r["target"], "before": b, "after": a},
                               ensure_ascii=False) + "\n")
    summary = {"train_jsonl": str(resolve_path(cfg, train_jsonl)), "eval_jsonl": str(resolve_path(cfg, eval_jsonl)),
               "train_examples": len(train_recs), "eval_examples": len(eval_recs), "steps": steps,
               "batch_size": batch, "lr": lr, "max_new_tokens": max_new_tokens,
               "final_loss": hist[-1]["loss"] if hist else None, "scores": scores}
    write_json(out / "scores.json", summary)
    return {**summary, "model": model, "out_dir": out}
