# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python (mblip)
#     language: python
#     name: mblip
# ---

# %% [markdown]
# # 01 · fetch — the raw inputs
# Fills `data/` (tracked by `data.dvc`) and shows what is in it.
# * **demo preset**: renders the demo world — scenes with scene graphs, English annotations for every task of
#   the paper's mix, gold text in every demo language, benchmark analogues in the official formats.
#   Deterministic: a second fetch is a no-op and a re-render gives byte-identical files.
# * **paper presets**: downloads the protocol's public files with checksums and resume, or links `data.local`.
#
# Inputs: `params.yaml` (+ its preset). Outputs: `data/`, `metrics/fetch.json`, `plots/world_grid.png`.

# %% tags=["parameters"]
params_path = "params.yaml"

# %%
import json, os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from mblip import config, fetch, report

cfg = config.load(params_path)
root = cfg.repo_root
summary = fetch.fetch(cfg)
print(cfg.preset, "·", summary["status"])

# %% [markdown]
# What was fetched: files per split, task and benchmark.

# %%
counts = report.fetch_counts(summary)
(root / "metrics").mkdir(exist_ok=True)
(root / "metrics/fetch.json").write_text(json.dumps(counts, indent=1, sort_keys=True) + "\n")
report.as_frame(counts)

# %% [markdown]
# A few test scenes with one reference caption per language (the XM3600 analogue).

# %%
src = root / cfg.data.root / cfg.data.source
fig = report.sample_grid(src / "eval/xm3600/captions.jsonl", src / "images", langs=cfg.languages.use, n=6)
(root / "plots").mkdir(exist_ok=True)
fig.savefig(root / "plots/world_grid.png", dpi=110, bbox_inches="tight")
