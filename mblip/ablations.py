"""Ablations that need several training runs. Each writes a long-format DVC plot and a metrics summary.

`init_ablation`: the paper's central claim — bootstrapping from BLIP-2's English-aligned Q-Former beats a randomly
initialised one at equal steps. Both variants re-align on the same task mix with the same settings, over several
seeds; the held-out xGQA-analogue accuracy (greedy decoding, a fixed subset per language) is measured at fixed
step budgets from the run's checkpoints.
"""
from __future__ import annotations

import copy
import statistics
import tempfile
from pathlib import Path
from typing import Sequence

from mblip.config import Config
from mblip.stages import _root, write_json, write_rows


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


def init_ablation(cfg: Config, seeds: Sequence[int] = (0, 1, 2), steps: int | None = None,
                  budgets: Sequence[int] | None = None, limit: int = 40) -> dict:
    """Bootstrapped vs scratch Q-Former over `seeds`; accuracy at each budget (a checkpoint every budget step)."""
    from mblip import realign as R
    root = _root(cfg)
    steps = steps or cfg.realign.steps
    budgets = sorted(budgets or [steps // 4, steps // 2, steps])
    feats = R.Features(root)
    rows = []
    for init in ("bootstrap", "scratch"):
        for seed in seeds:
            c = copy.deepcopy(cfg)
            c.realign.qformer_init = init
            c.realign.ckpt_every = budgets[0]
            out = root / "models/ablations/init" / f"{init}-seed{seed}"
            run = R.realign(c, out_dir=out, seed=seed, steps=steps, name=f"ablation_init_{init}_seed{seed}",
                            keep_checkpoints=len(range(budgets[0], steps + 1, budgets[0])))
            model = run["model"]
            for budget in budgets:
                ck = out / f"step-{budget:08d}"
                if not ck.exists():
                    raise FileNotFoundError(f"{ck} missing: budgets must be multiples of {budgets[0]}")
                model.load_trainable(ck)
                for lang, acc in _qa_accuracy(c, model, feats, limit).items():
                    rows.append({"init": init, "seed": seed, "step": budget, "lang": lang, "accuracy": round(acc, 4)})
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
