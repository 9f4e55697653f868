"""The held-out task mix: did re-alignment learn its own training tasks, on scenes it never saw?

The taskmix stage writes a validation mix beside the training one, ``artifacts/taskmix/val/<task>.jsonl``: in the
demo world the held-out split's scenes with every language's gold text; with the authors' released mix its first
500 rows (protocol §6.1). The paper's own sources have none, and the stage records that. `run` has a trained model
answer every record with the record's own prompt and scores the answers per task and per language:

    exact_match   the answer equals the target after `metrics.vqa_clean` on both sides (every task)
    token_f1      bag-of-tokens F1 (`metrics.token_f1`, zh/ja/th segmented): a softer score for captions
    yes / no      for a task whose every target starts with "yes" or "no" (the matching and verify tasks): POPE's
                  answer rule and metrics (`metrics.pope_scores`): the decision's accuracy (chance 50 on a
                  balanced task), the share of "yes" answers and of "yes" targets

This is not a benchmark of the paper. It tells which parts of the mix the model learned: a yes / no task at 50 %
with a "yes" share near 100 % was not learned, however low the training loss went.

    cfg = config.load("params.yaml")
    heldout.run(cfg)        # metrics/heldout.json, plots/heldout.csv, artifacts/heldout/predictions.jsonl

Decoding: the evaluations' beam width (``eval.num_beams``, default 5), length penalty 1 and at most
``realign.max_len`` new tokens: the targets run from one word to several sentences.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from mblip.config import Config
from mblip.stages import _root, write_json, write_rows

NO_VAL_MIX = ("not applicable: no validation mix in artifacts/taskmix/val (the paper's own sources have no gold "
              "translations to build one from; the demo world and the authors' released mix have one)")


def read_mix(folder: Path) -> list[dict]:
    """The records of every ``<task>.jsonl`` in `folder` (task order: by file name); [] if there are none."""
    out = []
    for path in sorted(Path(folder).glob("*.jsonl")):
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    out.append({k: rec[k] for k in ("id", "image", "lang", "task", "prompt", "target")})
                except (ValueError, KeyError, TypeError) as e:
                    raise ValueError(f"{path}:{i}: not a task-mix record ({type(e).__name__}: {e}); rebuild it "
                                     "with `dvc repro taskmix`") from None
    return out


def first_per_language(records: Sequence[dict], k: int) -> list[dict]:
    """The first `k` records of every (task, language), in their order (``eval.limit``: smoke tests)."""
    seen: dict[tuple[str, str], int] = {}
    out = []
    for r in records:
        key = (r["task"], r["lang"])
        seen[key] = seen.get(key, 0) + 1
        if seen[key] <= k:
            out.append(r)
    return out


def _first_word(text: str) -> str:
    words = text.strip().lower().replace(",", " ").replace(".", " ").split()
    return words[0] if words else ""


def is_yes_no(targets: Sequence[str]) -> bool:
    """True when every target starts with the word "yes" or "no" (any case, "Yes, it does." included)."""
    return bool(targets) and all(_first_word(t) in ("yes", "no") for t in targets)


def _scores(preds: Sequence[str], targets: Sequence[str], langs: Sequence[str], yes_no: bool) -> dict:
    from mblip.metrics import exact_match_accuracy, pope_scores, token_f1, vqa_clean
    out = {"n": len(preds), "exact_match": exact_match_accuracy(preds, [vqa_clean(t) for t in targets]),
           "token_f1": token_f1(preds, targets, langs)}
    if yes_no:
        gold = [_first_word(t) for t in targets]
        pope = pope_scores(preds, gold)
        out.update({"yes_no_accuracy": pope["accuracy"], "yes_ratio": pope["yes_ratio"],
                    "gold_yes_ratio": gold.count("yes") / len(gold)})
    return out


def score(records: Sequence[dict], preds: Sequence[str]) -> dict:
    """Per task: the scores of all its records and ``per_language``; records and predictions align one to one."""
    if len(records) != len(preds):
        raise ValueError(f"got {len(preds)} predictions for {len(records)} records; they must align one to one")
    tasks: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        tasks.setdefault(r["task"], []).append(i)
    out = {}
    for task, idx in tasks.items():
        yes_no = is_yes_no([records[i]["target"] for i in idx])

        def part(ids: list[int]) -> dict:
            return _scores([preds[i] for i in ids], [records[i]["target"] for i in ids],
                           [records[i]["lang"] for i in ids], yes_no)
        langs: dict[str, list[int]] = {}
        for i in idx:
            langs.setdefault(records[i]["lang"], []).append(i)
        out[task] = {**part(idx), "per_language": {l: part(ids) for l, ids in sorted(langs.items())}}
    return out


def rows(scores: dict, model: str) -> list[dict]:
    """Long rows (model, task, lang, metric, value) of `score`'s output; lang "all" = every language together."""
    out = []
    for task, s in scores.items():
        for lang, part in [("all", s), *s["per_language"].items()]:
            out += [{"model": model, "task": task, "lang": lang, "metric": k, "value": v}
                    for k, v in part.items() if k not in ("n", "per_language")]
    return out


def run(cfg: Config, which: str = "realign", generate: Callable | None = None) -> dict:
    """Answer and score the validation mix with a trained model (`realign.load_model`'s `which`), or with your own
    ``generate(images, prompts, decoding)``. Writes ``metrics/heldout.json``, ``plots/heldout.csv`` and
    ``artifacts/heldout/predictions.jsonl``; returns the metrics."""
    from mblip import realign as R
    from mblip.evaluate import Decoding
    root = _root(cfg)
    out_dir = root / "artifacts/heldout"
    out_dir.mkdir(parents=True, exist_ok=True)
    records = read_mix(root / "artifacts/taskmix/val")
    if cfg.eval.limit:  # smoke tests
        records = first_per_language(records, cfg.eval.limit)
    decoding = Decoding(num_beams=cfg.eval.num_beams or 5, max_new_tokens=cfg.realign.max_len, length_penalty=1.0)
    if not records:
        metrics = {"model": which, "status": NO_VAL_MIX}
        (out_dir / "predictions.jsonl").write_text("", encoding="utf-8")
        write_json(root / "metrics/heldout.json", metrics)
        write_rows(root / "plots/heldout.csv", [], fieldnames=["model", "task", "lang", "metric", "value"])
        return metrics
    if generate is None:
        generate = R.make_generate(R.load_model(cfg, which), R.Features(root), batch_size=cfg.eval.batch_size)
    preds = generate([[Path(r["image"])] for r in records], [r["prompt"] for r in records], decoding)
    with open(out_dir / "predictions.jsonl", "w", encoding="utf-8") as f:
        for r, p in zip(records, preds):
            f.write(json.dumps({**r, "prediction": p}, ensure_ascii=False) + "\n")
    scores = score(records, preds)
    metrics = {"model": which, "status": "ok", "decoding": decoding.generate_kwargs(), "per_task": scores}
    write_json(root / "metrics/heldout.json", metrics)
    write_rows(root / "plots/heldout.csv", rows(scores, which))
    return metrics
