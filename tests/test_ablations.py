"""Ablations: variants are one documented change each, applied and checked like params.yaml; the report turns their
metrics into tables whose deltas and seed spreads are worked out by hand here. (Running the variants themselves is
covered end to end by test_pipeline_e2e, which reproduces every ablate@ stage on a shrunken world.)"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from mblip import ablations as A
from mblip import config as C
from mblip import report as R


def _cfg():
    return C.load(C.find_root() / "params.yaml")


def test_every_variant_is_named_in_the_config_and_documented():
    assert tuple(A.VARIANTS) == C.ABLATIONS
    assert all(what for _, what in A.VARIANTS.values())
    assert A.VARIANTS["base"][0] == {}


def test_apply_changes_one_thing_and_leaves_the_original_alone():
    cfg = _cfg()
    c = A.apply(cfg, A.VARIANTS["lora_qv"][0])
    assert c.lora.scope == "qv" and cfg.lora.scope == "all"
    c = A.apply(cfg, A.VARIANTS["english_only"][0])
    assert c.taskmix.translated is False and c.lora == cfg.lora
    c = A.apply(cfg, A.VARIANTS["lora_r32"][0])
    assert (c.lora.rank, c.lora.alpha) == (32, 64)


def test_a_bad_override_names_the_key():
    with pytest.raises(C.ConfigError, match="lora has no field 'rnak'"):
        A.apply(_cfg(), {"lora.rnak": 4})
    with pytest.raises(C.ConfigError, match="rank must be a positive integer"):
        A.apply(_cfg(), {"lora.rank": 0})


def test_unknown_variants_are_rejected_before_any_training(tmp_path):
    cfg = _cfg()
    with pytest.raises(C.ConfigError, match="unknown ablation variant 'lora_r2'"):
        A.run_variant(cfg, "lora_r2")
    cfg.ablations.variants = ["base", "lora_r2"]
    with pytest.raises(C.ConfigError, match=r"ablations.variants: unknown \['lora_r2'\]"):
        cfg.ablations.check("ablations")
    cfg.ablations.variants, cfg.ablations.steps, cfg.ablations.init_budgets = ["base"], 10, 4
    with pytest.raises(C.ConfigError, match="must be a multiple"):
        cfg.ablations.check("ablations")


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")


def _variant(root, name, per_lang, steps=200):
    non_en = [v for k, v in per_lang.items() if k != "en"]
    _write(root / f"metrics/ablations/{name}.json",
           {"variant": name, "description": A.VARIANTS[name][1], "steps": steps, "xgqa": per_lang,
            "mean_all": sum(per_lang.values()) / len(per_lang), "mean_non_en": sum(non_en) / len(non_en),
            "final_loss": 0.5, "seconds": 12.0})


def test_ablation_table_deltas_against_base(tmp_path):
    # base: en .6, de .4, zh .2 -> avg .4, non-en .3; scratch: en .6, de .2, zh .1 -> avg .3, non-en .15
    _variant(tmp_path, "base", {"en": 0.6, "de": 0.4, "zh": 0.2})
    _variant(tmp_path, "scratch", {"en": 0.6, "de": 0.2, "zh": 0.1})
    cfg = _cfg()
    cfg.ablations.variants = ["base", "scratch", "lora_none"]
    df = R.ablation_table(tmp_path, cfg).set_index("variant")
    assert df.loc["base", "xGQA avg"] == 40.0 and df.loc["base", "Δ avg vs base"] == 0.0
    assert df.loc["scratch", "xGQA avg"] == 30.0 and df.loc["scratch", "Δ avg vs base"] == -10.0
    assert df.loc["scratch", "xGQA non-en"] == 15.0 and df.loc["scratch", "Δ non-en vs base"] == -15.0
    assert df.loc["scratch", "xGQA en"] == 60.0
    assert df.loc["lora_none", "status"] == "not run"


def test_init_table_means_and_spread_and_the_figures(tmp_path):
    # seeds 0, 1: bootstrap .5 .7 (mean 60, sd 14.1), scratch .3 .3 (mean 30, sd 0) -> gaps .2 .4 (30, sd 14.1, min 20)
    _write(tmp_path / "metrics/ablations/init.json", {"100": {
        "bootstrap_mean": 0.6, "bootstrap_std": 0.1414, "scratch_mean": 0.3, "scratch_std": 0.0,
        "gap_mean": 0.3, "gap_std": 0.1414, "gap_min": 0.2, "seeds": [0, 1]}})
    row = R.ablation_init_table(tmp_path).iloc[0]
    assert (row["step"], row["bootstrap"], row["scratch"], row["gap"], row["min gap"], row["seeds"]) == \
        (100, 60.0, 30.0, 30.0, 20.0, 2)
    assert row["bootstrap sd"] == 14.1
    curves = pd.DataFrame([{"init": i, "seed": s, "step": st, "lang": "mean_all", "accuracy": a}
                           for i, s, st, a in [("bootstrap", 0, 50, .4), ("bootstrap", 1, 50, .5),
                                               ("scratch", 0, 50, .2), ("scratch", 1, 50, .3),
                                               ("bootstrap", 0, 100, .5), ("bootstrap", 1, 100, .7),
                                               ("scratch", 0, 100, .3), ("scratch", 1, 100, .3)]])
    png = R.init_curves_figure(curves, tmp_path / "curves.png")
    assert png.stat().st_size > 5_000
    _variant(tmp_path, "base", {"en": 0.6, "de": 0.4})
    png = R.ablation_figure(R.ablation_table(tmp_path), tmp_path / "abl.png")
    assert png.stat().st_size > 5_000


def test_malformed_ablation_metrics_are_named(tmp_path):
    _write(tmp_path / "metrics/ablations/base.json", {"variant": "base"})
    with pytest.raises(R.ReportInputError, match="base.json: expected 'mean_all'"):
        R.ablation_table(tmp_path)
    _write(tmp_path / "metrics/ablations/init.json", {"100": {"bootstrap_mean": 0.5}})
    with pytest.raises(R.ReportInputError, match="budget '100' lacks"):
        R.ablation_init_table(tmp_path)


def test_measure_records_the_process_tree_and_passes_the_exit_code(tmp_path, monkeypatch):
    import sys
    from mblip import measure
    monkeypatch.setenv("MBLIP_RESOURCES_DIR", str(tmp_path / "res"))
    # a grandchild allocating ~120 MiB: its peak is what the record shows, not the wrapper's
    code = ("import subprocess, sys; sys.exit(subprocess.call([sys.executable, '-c', "
            "'import numpy as np; a = np.ones(15_000_000); a += 1']) + 3)")
    rc = measure.main([sys.executable, "-c", code, "runs/09_evaluate_xgqa.ipynb"])
    assert rc == 3
    rec = json.loads((tmp_path / "res/09_evaluate_xgqa.json").read_text())
    assert rec["exit_code"] == 3 and rec["peak_rss_mb"] > 114 and rec["wall_s"] > 0
    df = R.resources_table(_tree_with(tmp_path, rec))
    assert list(df["stage"]) == ["09_evaluate_xgqa", "total"] and df.iloc[0]["status"] == "failed (exit 3)"
    with pytest.raises(SystemExit, match="no notebook"):
        measure.stage_name(["python", "-c", "pass"])


def _tree_with(tmp_path, rec):
    root = tmp_path / "repo"
    _write(root / "metrics/resources/09_evaluate_xgqa.json", rec)
    return root


def test_resources_table_sums_wall_and_cpu_and_takes_the_largest_peak(tmp_path):
    _write(tmp_path / "metrics/resources/01_fetch.json", {"wall_s": 4.0, "cpu_s": 3.5, "peak_rss_mb": 300.0})
    _write(tmp_path / "metrics/resources/07_realign.json", {"wall_s": 100.5, "cpu_s": 98.0, "peak_rss_mb": 1200.0})
    df = R.resources_table(tmp_path).set_index("stage")
    assert (df.loc["total", "wall s"], df.loc["total", "CPU s"], df.loc["total", "peak RSS MiB"]) == (104.5, 101.5, 1200.0)
    _write(tmp_path / "metrics/resources/08_merge.json", {"wall_s": "fast"})
    with pytest.raises(R.ReportInputError, match="08_merge.json: expected wall_s"):
        R.resources_table(tmp_path)


def test_cpu_workers_one_per_core_at_most_the_tasks_and_a_bad_override_is_named(monkeypatch):
    from mblip.stages import cpu_workers
    monkeypatch.setenv("MBLIP_WORKERS", "3")
    assert cpu_workers(6) == 3 and cpu_workers(2) == 2
    monkeypatch.setenv("MBLIP_WORKERS", "1")
    assert cpu_workers(6) == 1
    monkeypatch.delenv("MBLIP_WORKERS")
    assert cpu_workers(100) == len(os.sched_getaffinity(0))
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("MBLIP_WORKERS", bad)
        with pytest.raises(ValueError, match="MBLIP_WORKERS must be a positive integer"):
            cpu_workers(2)
