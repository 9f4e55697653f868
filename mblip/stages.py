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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

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


def cpu_workers(tasks: int) -> int:
    """Processes for `tasks` independent one-thread jobs (stand-in chains, ablation runs): one per CPU core this
    process may use, at most `tasks`; ``MBLIP_WORKERS`` overrides. On a GPU: 1 (the jobs would share the device).
    Results do not depend on it: every job runs on one thread with its own seed."""
    import os

    import torch
    if torch.cuda.is_available():
        return 1
    env = os.environ.get("MBLIP_WORKERS")
    if env is not None and (not env.isdigit() or int(env) < 1):
        raise ValueError(f"MBLIP_WORKERS must be a positive integer, got {env!r}")
    n = int(env) if env else len(os.sched_getaffinity(0))
    return max(1, min(n, tasks))


def process_pool(workers: int):
    """A `ProcessPoolExecutor` of `workers` spawned processes. Spawn, not fork: a forked child inherits the
    parent's OpenMP state, which can hang it."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def data_dir(cfg: Config) -> Path:
    return _root(cfg) / cfg.data.root / cfg.data.source


def model_path(cfg: Config, ref: str) -> str:
    """A model reference as from_pretrained wants it: folders relative to the repo root, hub ids unchanged."""
    p = _root(cfg) / ref
    return str(p) if p.exists() or ref.startswith(("models/", "./", "../")) else ref


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def write_rows(path: Path, rows: list[dict], fieldnames: list[str] | None = None) -> None:
    """Long-format CSV for DVC plots (one row per step / language / ...). With ``fieldnames``, no rows gives a
    header-only file (a declared plot that has nothing to show this run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not rows and not fieldnames:
        raise ValueError(f"no rows to write to {path}")
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fieldnames or list(rows[0]))
        w.writeheader()
        w.writerows(rows)


# ------------------------------------------------------------------------------------------------ the mix plan
IMAGE_CHECKS = "artifacts/image_checks.sqlite"  # paper images checked once (size/mtime-keyed), outside data/


@dataclass
class MixPlan:
    """What the translate and taskmix stages share: the English records per task, every record's language, the
    strings to translate, and the builder that turns them into mix records ``build(english, assigned, tr, labels,
    seed)``. ``coverage`` is the paper sources' summary (`taskmix_paper.build_paper_english`), None for the demo."""
    english: dict[str, list[dict]]
    assigned: dict[str, list[str | None]]
    requests: list
    build: Callable[..., list[dict]]
    coverage: dict | None = None


def plan_mix(cfg: Config, split: str = "train") -> MixPlan:
    """English records + language assignment + translation requests of ``split``, from the data ``data.source``
    names: the demo world's annotation files (`mblip.taskmix`) or the paper's official sources
    (`mblip.taskmix_paper`, training split only)."""
    lc, tm = cfg.languages, cfg.taskmix
    if cfg.data.source == "paper":
        from mblip import taskmix_paper as P
        if split != "train":
            raise ValueError(f"the paper's sources give a training mix only, not {split!r}")
        english, coverage = P.build_paper_english(data_dir(cfg), tm.tasks, languages=lc.use, seed=cfg.seed,
                                                  image_cache=_root(cfg) / IMAGE_CHECKS)
        assigned = P.assign_paper(english, lc.use, lc.assignment, lc.temperature, cfg.seed, tm.translated)
        return MixPlan(english, assigned, P.plan_paper_requests(english, assigned), P.build_paper, coverage)
    from mblip import taskmix as M
    english = M.load_english(data_dir(cfg), split, tm.tasks)
    assigned = {t: M.assign(t, len(rows), lc.use, lc.assignment, lc.temperature, cfg.seed, tm.translated)
                for t, rows in english.items()}
    return MixPlan(english, assigned, M.plan_requests(english, assigned), M.build)


# ------------------------------------------------------------------------------------------------ translate
def _write_translations(out: Path, table: dict, labels: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "translations.jsonl", "w", encoding="utf-8", newline="\n") as f:
        for (text, lang), t in sorted(table.items()):
            f.write(json.dumps({"text": text, "lang": lang, "translation": t}, ensure_ascii=False, sort_keys=True) + "\n")
    write_json(out / "labels.json", labels)


QUALITY_COLUMNS = ["lang", "metric", "value"]


def translate(cfg: Config, quality_sample: int = 120) -> dict:
    """Translate everything the task mix needs (deduplicated, cached, resumable) and measure the quality.

    Writes ``artifacts/translate/{translations.jsonl,labels.json}``, ``metrics/translate.json`` and
    ``plots/translate_quality.csv``. Quality per language on a sample of captions: chrF against the gold
    (human-written, here the realisers') reference where the data has one, round-trip chrF (en → x → en), and the
    share of outputs in the language's script (wrong-language output check).

    With ``taskmix.released`` (the authors' translated mix) nothing is translated: the outputs are written empty
    and the metrics say why.
    """
    root = _root(cfg)
    out = root / "artifacts/translate"
    if cfg.taskmix.released:
        note = (f"translation skipped: taskmix.released = {cfg.taskmix.released!r} is the authors' already "
                "translated mix, which the taskmix stage converts as it is")
        _write_translations(out, {}, {})
        metrics = {"requests": 0, "new": 0, "cached": 0, "sentences_per_s": 0.0, "seconds": 0.0, "quality": {},
                   "note": note}
        write_json(root / "metrics/translate.json", metrics)
        write_rows(root / "plots/translate_quality.csv", [], fieldnames=QUALITY_COLUMNS)
        return {"metrics": metrics, "rows": [], "examples": [], "summary": note}

    from mblip.translate import Translator, quality_table
    from sacrebleu.metrics import CHRF

    cpu_threads()
    plan = plan_mix(cfg)
    english, assigned, reqs = plan.english, plan.assigned, plan.requests
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

    _write_translations(out, table, labels)
    metrics = {"requests": len(reqs), "new": stats.new if stats else 0, "cached": stats.cached if stats else 0,
               "sentences_per_s": round(stats.sentences_per_s, 1) if stats else 0.0,
               "seconds": round(time.time() - t0, 1),
               "quality": {r["lang"] + "." + r["metric"]: r["value"] for r in rows}}
    write_json(root / "metrics/translate.json", metrics)
    write_rows(root / "plots/translate_quality.csv", rows, fieldnames=QUALITY_COLUMNS)
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
    """Build the instruction mix from the English records and the translations.

    Writes ``artifacts/taskmix/train/<task>.jsonl`` (schema in `mblip.taskmix`), ``metrics/taskmix.json`` and
    ``plots/taskmix_counts.csv``. Demo world: also a validation mix ``artifacts/taskmix/val/<task>.jsonl`` built
    from the held-out split with the languages' *gold* text (so the validation loss measures the target languages,
    not the translator). Paper sources: no validation mix (they have no gold translations; the metrics say so), and
    the sources' coverage (records kept, images left out) in ``metrics/taskmix_coverage.json`` and
    ``artifacts/taskmix/COVERAGE.md``. With ``taskmix.released``: the authors' mix converted as it is
    (`taskmix_paper.convert_released`; its first 500 rows are the validation mix, as the authors').
    """
    from mblip import taskmix as M
    root = _root(cfg)
    out = root / "artifacts/taskmix"
    for old in [*out.glob("train/*.jsonl"), *out.glob("val/*.jsonl")]:
        old.unlink()  # a task or split absent from this run must not keep an earlier run's shard
    if cfg.taskmix.released:
        return _taskmix_released(cfg, out)

    plan = plan_mix(cfg)
    table, labels = load_translations(root)

    def tr(text: str, lang: str) -> str:
        if lang == "en":
            return text
        try:
            return table[(text, lang)]
        except KeyError:
            raise KeyError(f"no translation of {text!r} into {lang} in artifacts/translate/translations.jsonl: "
                           "the translate stage is out of date; run `dvc repro translate`") from None

    records = plan.build(plan.english, plan.assigned, tr, labels, cfg.seed)
    written = M.write(records, out / "train")
    if plan.coverage is not None:
        from mblip.taskmix_paper import coverage_markdown
        write_json(root / "metrics/taskmix_coverage.json", plan.coverage)
        (out / "COVERAGE.md").write_text("# Task-mix sources: coverage\n\n" + coverage_markdown(plan.coverage),
                                         encoding="utf-8")
    if cfg.data.source == "demo":  # only the demo world has gold (human-written) text in the target languages
        val = _gold_val_mix(cfg, tr)
        M.write(val, out / "val")
        n_val, val_note = len(val), None
    else:
        n_val, val_note = 0, ("no validation mix: the paper's sources have no gold translations to build one "
                              "from (the demo world's validation mix uses its gold text)")
    counts = M.counts(records)
    _mix_metrics(root, len(records), n_val, val_note, written, counts)
    result = {"records": records, "counts": counts, "val": n_val, "total": len(records)}
    if val_note:
        result["val_note"] = val_note
    return result


def _gold_val_mix(cfg: Config, tr: Callable[[str, str], str]) -> list[dict]:
    """The demo's validation mix: the train procedure on the val split, gold text instead of machine translation."""
    from mblip import taskmix as M
    from mblip import templates as T
    plan = plan_mix(cfg, "val")
    val_en = plan.english
    gold = {}
    for task, rows in val_en.items():
        for r in rows:
            for lang, fields in r.get("gold", {}).items():
                for k, v in fields.items():
                    gold[(r["en"][k], lang)] = v
    extra = [*M.DESCRIBE_INSTRUCTIONS, *T.CAPTION_TEMPLATES_EN]

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
    return plan.build(val_en, plan.assigned, tr_gold, val_labels, cfg.seed + 1)


def _mix_metrics(root: Path, total: int, n_val: int, val_note: str | None, per_task: dict, counts: dict,
                 **extra) -> None:
    metrics = {"total": total, "val": n_val, "per_task": per_task, "per_task_lang": counts, **extra}
    if val_note:
        metrics["val_note"] = val_note
    write_json(root / "metrics/taskmix.json", metrics)
    write_rows(root / "plots/taskmix_counts.csv",
               [{"task": t, "lang": l, "n": n} for t, d in counts.items() for l, n in d.items()],
               fieldnames=["task", "lang", "n"])


RELEASED_VAL_ROWS = 500  # the authors validate on train[:500] (protocol §6.1)


def _taskmix_released(cfg: Config, out: Path, sample: int = 1000) -> dict:
    """The authors' released mix, converted streaming into our schema (no translation). Returns about ``sample``
    records spread over the mix (the full mix can hold millions); ``total`` and ``counts`` cover all of it."""
    from collections import Counter

    from mblip import taskmix_paper as P
    root, data = _root(cfg), data_dir(cfg)
    report = P.convert_released(data, out, src=cfg.taskmix.released, val_rows=RELEASED_VAL_ROWS,
                                checker=P.ImageChecker(data, cache=root / IMAGE_CHECKS))
    written = report["written"]["train"]
    total, n_val = sum(written.values()), sum(report["written"]["val"].values())
    step = max(1, total // sample)
    counts: dict[str, Counter] = {}
    records, i = [], 0
    for shard in sorted((out / "train").glob("*.jsonl")):
        with open(shard, encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                counts.setdefault(r["task"], Counter())[r["lang"]] += 1
                if i % step == 0:
                    records.append(r)
                i += 1
    counts = {t: dict(sorted(c.items())) for t, c in sorted(counts.items())}
    val_note = (f"the authors' validation rows: the released mix's first {RELEASED_VAL_ROWS} rows, {n_val} of them "
                f"with a readable image (they validate on train[:500] and train on train[500:], protocol §6.1)")
    _mix_metrics(root, total, n_val, val_note, written, counts,
                 released={k: v for k, v in report.items() if k != "langs"})
    return {"records": records, "counts": counts, "val": n_val, "val_note": val_note, "total": total,
            "note": f"records: a sample of {len(records):,} of the {total:,} converted training records (total)"}


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
                            n_text=s.text_scenes, nli_share=s.nli_share, pair_share=s.pair_share,
                            match_heads=s.match_heads, aligned_words=s.aligned_words,
                            blip2_query_tokens=s.blip2_query_tokens, blip2_text_target=s.blip2_text_target,
                            workers=cpu_workers(2),
                            **{f"{_STEP_ARG.get(k, k)}_steps": v for k, v in s.steps.items()})
    write_json(root / "metrics/standins.json", metrics)
    return metrics
