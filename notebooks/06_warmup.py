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
# # 06 · warmup — the projection alone
# Optional first stage (the authors used it for mT0-XL, not for BLOOMZ): only the linear projection between the
# Q-Former and the new LLM trains, on captions, so that re-alignment starts from a projection that already speaks
# the LLM's embedding space. `warmup.enabled: false` skips it.
#
# Inputs: `artifacts/taskmix/`, `artifacts/features/`. Outputs: `models/warmup/`, `metrics/warmup.json`,
# `plots/warmup_history.csv`.

# %% tags=["parameters"]
params_path = "params.yaml"

# %%
import pandas as pd
from mblip import config, realign

cfg = config.load(params_path)
summary = realign.warmup(cfg)
summary

# %%
if summary["enabled"]:
    pd.read_csv(cfg.repo_root / "plots/warmup_history.csv").plot(x="step", y="loss", figsize=(6, 3), title="warm-up loss")
