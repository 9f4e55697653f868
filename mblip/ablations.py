"""Ablations that need several training runs. Each writes a long-format DVC plot and a metrics summary.

`run_variant` (the ``ablate@<variant>`` stages): one re-alignment with one change against the configured experiment
(`VARIANTS`), the same step budget for every variant (``ablations.steps``), scored on the xGQA analogue (greedy,
``ablations.eval_limit`` questions per language). The report collects ``metrics/ablations/<variant>.json``.

`init_ablation`: the paper's central claim — bootstrapping from BLIP-2's English-aligned Q-Former beats a randomly
initialised one at equal steps. Both variants re-align on the same task mix with the same settings, over several
seeds; the held-out xGQA-analogue accuracy (greedy decoding, a fixed subset per language) is measured at fixed
step budgets from the run's checkpoints.
"""
from __future__ import annotations

import copy
import statistics
import tempfile
import time
from pathlib import Path
from typing import Sequence

from mblip.config import ABLATIONS, Config, ConfigError
from mblip.stages import _root, cpu_threads, cpu_workers, process_pool, write_json, write_rows

# name -> (overrides as dotted keys, what the variant tests). Overrides apply on top of the configured experiment,
# so "base" is whatever params.yaml says (by default the method: bootstrapped Q-Former, warm-up, LoRA on every
# linear layer of the LLM, the translated task mix).
VARIANTS: dict[str, tuple[dict, str]] = {
    "base": ({}, "the configured experiment, at the ablation step budget"),
    "lora_none": ({"lora.scope": "none"}, "no LoRA: the LLM stays frozen"),
    "lora_qv": ({"lora.scope": "qv"}, "LoRA on the attention q and v projections only"),
    "lora_r32": ({"lora.rank": 32, "lora.alpha": 64}, "LoRA rank 32 (alpha/r kept at 2)"),
    "qformer_frozen": ({"realign.train_qformer": False}, "Q-Former and query tokens frozen: projection + LoRA only"),
    "no_warmup": ({"warmup.enabled": False}, "no projection warm-up before re-alignment"),
    "scratch": ({"realign.qformer_init": "scratch"}, "randomly initialised Q-Former instead of BLIP-2's"),
    "english_only": ({"taskmix.translated": False}, "the task mix left in English (no translation)"),
    "captions_only": ({"taskmix.tasks": ["caption"]}, "captions only instead of the full task mix"),
}
assert tuple(VARIANTS) == ABLATIONS, "mblip.config.ABLATIONS and VARIANTS must list the same names"


def apply(cfg: Config, overrides: dict) -> Config:
    """A deep copy of `cfg` with dotted-key overrides (``{"lora.scope": "none"}``), checked like params.yaml."""
    c = copy.deepcopy(cfg)
    for key, value in overrides.items():
        section, _, field = key.partition(".")
        obj = getattr(c, section)
        if not hasattr(obj, field):
            raise ConfigError(f"ablation override {key!r}: {section} has no field {field!r}")
        setattr(obj, field, value)
        if hasattr(obj, "check"):
            obj.check(section)
    return c


def _examples(cfg: Config, feats) -> list[dict]:
    """Training examples of a variant: the task mix on disk, or, for an English-only variant, the same English
    annotations built into a mix without translation (every record assigned to English)."""
    from mblip import realign as R
    from mblip import stages
    root = _root(cfg)
    if cfg.taskmix.translated:
        return R.mix_examples(root, feats, "train", tasks=cfg.taskmix.tasks)

    def english(text: str, lang: str) -> str:
        if lang != "en":
            raise ValueError(f"English-only mix asked for a {lang} translation of {text!r}")
        return text

    plan = stages.plan_mix(cfg)
    records = plan.build(plan.english, plan.assigned, english, {}, cfg.seed)
    return [R.as_example(r, feats) for r in records]


def run_variant(cfg: Config, name: str) -> dict:
    """Re-align variant `name` for ``ablations.steps`` steps and score it; writes metrics/ablations/<name>.json
    (the scores, the overrides, training loss and time) and plots/ablations/<name>_history.csv (the loss curve)."""
    from mblip import realign as R
    if name not in VARIANTS:
        raise ConfigError(f"unknown ablation variant {name!r}; choose from {list(VARIANTS)} (ablations.variants)")
    overrides, what = VARIANTS[name]
    c = apply(cfg, overrides)
    root = _root(cfg)
    t0 = time.time()
    feats = R.Features(root)
    examples = _examples(c, feats)
    with tempfile.TemporaryDirectory() as tmp:
        run = R.realign(c, out_dir=Path(tmp) / "model", steps=cfg.ablations.steps, name=f"ablations/{name}",
                        examples=examples, keep_checkpoints=1, metrics_path=Path(tmp) / "train.json")
        train_seconds = time.time() - t0
        acc = _qa_accuracy(c, run["model"], feats, cfg.ablations.eval_limit)
    non_en = [v for k, v in acc.items() if k not in ("en", "mean_all")]
    hist = run["history"]
    result = {"variant": name, "description": what, "overrides": overrides, "steps": cfg.ablations.steps,
              "seed": cfg.seed, "examples": len(examples), "warm_projection": run["warm_projection"],
              "final_loss": round(statistics.mean(h["loss"] for h in hist[-5:]), 4) if hist else None,
              "xgqa": {k: round(v, 4) for k, v in acc.items() if k != "mean_all"},
              "mean_all": round(acc["mean_all"], 4),
              "mean_non_en": round(statistics.mean(non_en), 4) if non_en else None,
              "eval_limit": cfg.ablations.eval_limit,
              "train_seconds": round(train_seconds, 1), "seconds": round(time.time() - t0, 1)}
    write_json(root / f"metrics/ablations/{name}.json", result)
    return result


def _qa_accuracy(cfg: Config, model, feats, limit: int) -> dict[str, float]:
    from mblip import evaluate as E
    from mblip.realign import make_generate
    from mblip.stages import data_dir
    gen = make_generate(model, feats, batch_size=cfg.eval.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        res = E.run("xgqa", gen, data_dir(cfg), tmp, layout=cfg.eval.layout, languages=cfg.eval.languages,
                    decoding={"num_beams": 1}, batch_size=cfg.eval.batch_size, limit=limit, progress=False)
    per = {lang: m["accuracy"] for lang, m in res.metrics["per_language"].items()}
    per["mean_all"] = statistics.mean(per.values())
    return per


def init_ablation(cfg: Config, seeds: Sequence[int] | None = None, steps: int | None = None,
                  budgets: Sequence[int] | None = None, limit: int | None = None) -> dict:
    """Bootstrapped vs scratch Q-Former over `seeds`; accuracy at each budget (a checkpoint every budget step).

    Defaults from ``ablations``: init_seeds, steps, init_budgets evenly spaced budgets, eval_limit questions per
    language. Writes plots/ablations/init_curves.csv (long format) and metrics/ablations/init.json (per budget:
    mean and spread of each init over the seeds, and of the paired gap)."""
    root = _root(cfg)
    a = cfg.ablations
    seeds = list(a.init_seeds if seeds is None else seeds)
    steps = steps or a.steps
    limit = limit or a.eval_limit
    budgets = sorted(budgets or [steps * k // a.init_budgets for k in range(1, a.init_budgets + 1)])
    with tempfile.TemporaryDirectory() as tmp:  # checkpoints only live until they are scored
        rows = _init_curves(cfg, seeds, steps, budgets, limit, Path(tmp))
    summary = {}
    for budget in budgets:
        per = {init: [r["accuracy"] for r in rows if r["init"] == init and r["step"] == budget and r["lang"] == "mean_all"]
               for init in ("bootstrap", "scratch")}
        gaps = [b - s for b, s in zip(per["bootstrap"], per["scratch"])]
        summary[str(budget)] = {
            **{f"{init}_mean": round(statistics.mean(v), 4) for init, v in per.items()},
            **{f"{init}_std": round(statistics.stdev(v), 4) if len(v) > 1 else 0.0 for init, v in per.items()},
            "gap_mean": round(statistics.mean(gaps), 4),
            "gap_std": round(statistics.stdev(gaps), 4) if len(gaps) > 1 else 0.0,
            "gap_min": round(min(gaps), 4), "seeds": list(seeds)}
    write_rows(root / "plots/ablations/init_curves.csv", rows)
    write_json(root / "metrics/ablations/init.json", summary)
    return {"rows": rows, "summary": summary}


def _init_curves(cfg: Config, seeds, steps: int, budgets: Sequence[int], limit: int, tmp: Path) -> list[dict]:
    """Rows of every (init, seed) run. The runs are independent and each uses one torch thread with its own seed,
    so with several CPU cores (`stages.cpu_workers`) they run in that many processes, with the same rows."""
    runs = [(init, seed) for init in ("bootstrap", "scratch") for seed in seeds]
    workers = cpu_workers(len(runs))
    if workers == 1:
        from mblip import realign as R
        feats = R.Features(_root(cfg))
        examples = R.mix_examples(_root(cfg), feats, "train")
        return [row for init, seed in runs
                for row in _init_run(cfg, init, seed, steps, budgets, limit, tmp, examples, feats)]

    # each child reads the features and the task mix from disk again (seconds) rather than receiving them pickled
    with process_pool(workers) as pool:
        futures = [pool.submit(_init_run, cfg, init, seed, steps, budgets, limit, tmp) for init, seed in runs]
        return [row for f in futures for row in f.result()]


def _init_run(cfg: Config, init: str, seed: int, steps: int, budgets: Sequence[int], limit: int, tmp: Path,
              examples=None, feats=None) -> list[dict]:
    """Re-align one (init, seed) pair, checkpointing every budgets[0] steps, and score every budget."""
    from mblip import realign as R
    cpu_threads()
    if feats is None:
        feats = R.Features(_root(cfg))
        examples = R.mix_examples(_root(cfg), feats, "train")
    c = copy.deepcopy(cfg)
    c.realign.qformer_init = init
    c.realign.ckpt_every = budgets[0]
    out = tmp / f"{init}-seed{seed}"
    run = R.realign(c, out_dir=out, seed=seed, steps=steps, name=f"ablations/init_{init}_seed{seed}",
                    keep_checkpoints=len(range(budgets[0], steps + 1, budgets[0])), examples=examples,
                    metrics_path=out / "train.json", history_path=out / "history.csv")
    model = run["model"]
    rows = []
    for budget in budgets:
        ck = out / f"step-{budget:08d}"
        if not ck.exists():
            raise FileNotFoundError(f"{ck} missing: budgets must be multiples of {budgets[0]}")
        model.load_trainable(ck)
        for lang, acc in _qa_accuracy(c, model, feats, limit).items():
            rows.append({"init": init, "seed": seed, "step": budget, "lang": lang, "accuracy": round(acc, 4)})
    return rows
