"""The pipeline stages as plain functions: ``python -m mblip <stage>`` and the stage notebooks call these.

Each reads the merged config, does the work through the package's modules, writes its outputs under the
repository root (``artifacts/``, ``models/``, ``metrics/``, ``plots/``) and returns a summary for the notebook
to show. No stage branches on the preset name; sizes, ids and paths come from the config.
"""
from __future__ import annotations

import csv
import json
import random
import time
from pathlib import Path

from mblip import languages as L
from mblip.config import Config


def _root(cfg: Config) -> Path:
    return cfg.repo_root


def cpu_threads() -> None:
    """On a CPU, one torch thread per process (``MBLIP_THREADS`` to change it): the demo's models are so small
    that a second thread only adds synchronisation (measured on 2 cores: 0.134 s vs 0.18 s per realign step,
    and 8.4 s when OpenMP spins actively)."""
    import os

    import torch
    if not torch.cuda.is_available():
        torch.set_num_threads(int(os.environ.get("MBLIP_THREADS", "1")))


def data_dir(cfg: Config) -> Path:
    return _root(cfg) / cfg.data.root / cfg.data.source


def model_path(cfg: Config, ref: str) -> str:
    """A model reference as from_pretrained wants it: folders relative to the repo root, hub ids unchanged."""
    p = _root(cfg) / ref
    return str(p) if p.exists() or ref.startswith(("models/", "./", "../")) else ref


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def write_rows(path: Path, rows: list[dict]) -> None:
    """Long-format CSV for DVC plots (one row per step / language / ...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not rows:
        raise ValueError(f"no rows to write to {path}")
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


# ------------------------------------------------------------------------------------------------ translate
def _assignments(cfg: Config, english: dict) -> dict[str, list]:
    from mblip import taskmix as M
    lc = cfg.languages
    return {t: M.assign(t, len(rows), lc.use, lc.assignment, lc.temperature, cfg.seed, cfg.taskmix.translated)
            for t, rows in english.items()}


def translate(cfg: Config, quality_sample: int = 120) -> dict:
    """Translate everything the task mix needs (deduplicated, cached, resumable) and measure the quality.

    Writes ``artifacts/translate/{translations.jsonl,labels.json}``, ``metrics/translate.json`` and
    ``plots/translate_quality.csv``. Quality per language on a sample of captions: chrF against the gold
    (human-written, here the realisers') reference where the data has one, round-trip chrF (en → x → en), and the
    share of outputs in the language's script (wrong-language output check).
    """
    from mblip import taskmix as M
    from mblip.translate import Translator, quality_table
    from sacrebleu.metrics import CHRF

    cpu_threads()
    root = _root(cfg)
    out = root / "artifacts/translate"
    english = M.load_english(data_dir(cfg), "train", cfg.taskmix.tasks)
    assigned = _assignments(cfg, english)
    reqs = M.plan_requests(english, assigned)
    tc = cfg.translate
    translator = Translator(model_path(cfg, cfg.models.translator), revision=cfg.models.revisions.get(cfg.models.translator),
                            batch_size=tc.batch_size, num_beams=tc.num_beams, max_new_tokens=tc.max_new_tokens,
                            cache_dir=out / "cache")
    t0 = time.time()
    mt = translator.translate_many([(r.text, L.get(r.lang).nllb) for r in reqs])
    stats = translator.last_stats
    table = {(r.text, r.lang): t for r, t in zip(reqs, mt)}

    # VQA answer dictionaries, kept only where the translation back-translates to the English answer
    answers = sorted({row["en"]["answer"] for t in ("vqa", "vqg") if t in english for row in english[t]})
    labels = {}
    for lang in sorted({l for ls in assigned.values() for l in ls if l not in (None, "en")}):
        fwd = [table[(a, lang)] for a in answers]
        back = translator.translate(fwd, "eng_Latn", src_nllb=L.get(lang).nllb)
        labels[lang] = {a: f for a, f, b in zip(answers, fwd, back) if b.strip().lower() == a.strip().lower()}

    # quality on a sample of caption translations
    rng = random.Random(cfg.seed)
    samples, gold_scores = [], {}
    chrf = CHRF()
    caption_rows = english.get("caption", [])
    for lang in sorted(labels):
        rows = [r for r, l in zip(caption_rows, assigned.get("caption", [])) if l == lang]
        rows = rng.sample(rows, min(quality_sample, len(rows)))
        if not rows:
            continue
        srcs = [r["en"]["caption"] for r in rows]
        hyps = [table[(s, lang)] for s in srcs]
        backs = translator.translate(hyps, "eng_Latn", src_nllb=L.get(lang).nllb)
        samples += [{"lang": lang, "src": s, "mt": h, "back": b} for s, h, b in zip(srcs, hyps, backs)]
        golds = [r.get("gold", {}).get(lang, {}).get("caption") for r in rows]
        if all(golds):
            gold_scores[lang] = chrf.corpus_score(hyps, [golds]).score
    quality = {row["lang"]: row for row in quality_table(samples)}
    rows = []
    for lang, q in sorted(quality.items()):
        rows.append({"lang": lang, "metric": "chrf_roundtrip", "value": round(q["chrf_mean"], 2)})
        rows.append({"lang": lang, "metric": "script_ok_pct", "value": round(100 * q["script_ok_rate"], 2)})
        if lang in gold_scores:
            rows.append({"lang": lang, "metric": "chrf_vs_gold", "value": round(gold_scores[lang], 2)})
        rows.append({"lang": lang, "metric": "vqa_labels_kept_pct",
                     "value": round(100 * len(labels[lang]) / max(1, len(answers)), 2)})
    examples = samples[:: max(1, len(samples) // 12)][:12]

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "translations.jsonl", "w", encoding="utf-8", newline="\n") as f:
        for (text, lang), t in sorted(table.items()):
            f.write(json.dumps({"text": text, "lang": lang, "translation": t}, ensure_ascii=False, sort_keys=True) + "\n")
    write_json(out / "labels.json", labels)
    metrics = {"requests": len(reqs), "new": stats.new if stats else 0, "cached": stats.cached if stats else 0,
               "sentences_per_s": round(stats.sentences_per_s, 1) if stats else 0.0,
               "seconds": round(time.time() - t0, 1),
               "quality": {r["lang"] + "." + r["metric"]: r["value"] for r in rows}}
    write_json(root / "metrics/translate.json", metrics)
    if rows:
        write_rows(root / "plots/translate_quality.csv", rows)
    return {"metrics": metrics, "rows": rows, "examples": examples, "summary": stats.summary() if stats else ""}


# ------------------------------------------------------------------------------------------------ taskmix
def load_translations(root: Path) -> tuple[dict, dict]:
    out = root / "artifacts/translate"
    table = {}
    path = out / "translations.jsonl"
    if path.exists():
        with open(path, encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                table[(r["text"], r["lang"])] = r["translation"]
    labels = json.loads((out / "labels.json").read_text(encoding="utf-8")) if (out / "labels.json").exists() else {}
    return table, labels


def taskmix(cfg: Config) -> dict:
    """Build the instruction mix from the English annotations and the translations.

    Writes ``artifacts/taskmix/train/<task>.jsonl`` (schema in `mblip.taskmix`), a validation mix
    ``artifacts/taskmix/val/<task>.jsonl`` built from the held-out split with the languages' *gold* text (so the
    validation loss measures the target languages, not the translator), ``metrics/taskmix.json`` and
    ``plots/taskmix_counts.csv``.
    """
    from mblip import taskmix as M
    root = _root(cfg)
    english = M.load_english(data_dir(cfg), "train", cfg.taskmix.tasks)
    assigned = _assignments(cfg, english)
    table, labels = load_translations(root)

    def tr(text: str, lang: str) -> str:
        if lang == "en":
            return text
        try:
            return table[(text, lang)]
        except KeyError:
            raise KeyError(f"no translation of {text!r} into {lang} in artifacts/translate/translations.jsonl: "
                           "the translate stage is out of date; run `dvc repro translate`") from None

    records = M.build(english, assigned, tr, labels, cfg.seed)
    written = M.write(records, root / "artifacts/taskmix/train")

    # validation: same procedure on the val split, gold text instead of machine translation
    val_en = M.load_english(data_dir(cfg), "val", cfg.taskmix.tasks)
    val_assigned = _assignments(cfg, val_en)
    gold = {}
    for task, rows in val_en.items():
        for r in rows:
            for lang, fields in r.get("gold", {}).items():
                for k, v in fields.items():
                    gold[(r["en"][k], lang)] = v
    extra = [*M.DESCRIBE_INSTRUCTIONS]
    from mblip import templates as T
    extra += list(T.CAPTION_TEMPLATES_EN)

    def tr_gold(text: str, lang: str) -> str:
        if lang == "en":
            return text
        if (text, lang) in gold:
            return gold[(text, lang)]
        if text in extra:  # instructions have no gold; use the machine translation the train mix uses
            return tr(text, lang)
        raise KeyError(f"validation text {text!r} has no gold {lang} version")
    val_labels = {lang: {a: gold[(a, lang)] for a in {r["en"]["answer"] for t in ("vqa", "vqg") if t in val_en
                                                       for r in val_en[t]} if (a, lang) in gold}
                  for lang in (cfg.languages.use or [])}
    val = M.build(val_en, val_assigned, tr_gold, val_labels, cfg.seed + 1)
    M.write(val, root / "artifacts/taskmix/val")

    counts = M.counts(records)
    write_json(root / "metrics/taskmix.json", {"total": len(records), "val": len(val), "per_task": written,
                                               "per_task_lang": counts})
    write_rows(root / "plots/taskmix_counts.csv",
               [{"task": t, "lang": l, "n": n} for t, d in counts.items() for l, n in d.items()])
    return {"records": records, "counts": counts, "val": len(val)}


# ------------------------------------------------------------------------------------------------ standins
_STEP_ARG = {"flan_t5": "lm"}  # train_all's argument names


def standins(cfg: Config) -> dict:
    """Train the demo's stand-ins into ``models/standins/`` (or, for hub models, record their ids)."""
    root = _root(cfg)
    out = root / "models/standins"
    if not cfg.standins.train:
        out.mkdir(parents=True, exist_ok=True)
        m = cfg.models
        metrics = {"hub": {"blip2": m.blip2, "llm": m.llm, "translator": m.translator, "revisions": m.revisions}}
        write_json(out / "hub.json", metrics)
    else:
        from mblip.demo.standins import train_all
        w, s = cfg.world, cfg.standins
        metrics = train_all(out, n_train=w.n_train, n_val=w.n_val, image_size=w.image_size, max_objects=w.max_objects,
                            langs=cfg.languages.use, seed=cfg.seed, d_model=s.d_model, vit_hidden=s.vit_hidden, n_eval=s.n_eval,
                            **{f"{_STEP_ARG.get(k, k)}_steps": v for k, v in s.steps.items()})
    write_json(root / "metrics/standins.json", metrics)
    return metrics
