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
# # 12 · ablate — one variant, one change, the same step budget
# Each `ablate@<variant>` stage re-aligns from the same starting point as the main run with exactly one change
# (`mblip.ablations.VARIANTS`: LoRA off / q,v only / rank 32, Q-Former frozen, no warm-up, random Q-Former,
# English-only data, captions only), for `ablations.steps` steps, and scores the result on the xGQA analogue
# (greedy, `ablations.eval_limit` questions per language). `base` is the configured experiment at the same budget.
# The report puts all variants side by side (`results/tables/ablations.md`).
#
# Inputs: `models/standins/`, `models/warmup/`, `artifacts/taskmix/`, `artifacts/features/`, `data/`.
# Outputs: `metrics/ablations/<variant>.json`, `plots/ablations/<variant>_history.csv`.

# %% tags=["parameters"]
params_path = "params.yaml"
variant = "base"

# %%
import pandas as pd
from mblip import ablations, config

cfg = config.load(params_path)
overrides, what = ablations.VARIANTS[variant]
print(f"{variant}: {what}; overrides {overrides or 'none'}; {cfg.ablations.steps} steps")
out = ablations.run_variant(cfg, variant)
print(f"{out['examples']} training examples, final loss {out['final_loss']}, {out['seconds']} s")

# %%
pd.Series(out["xgqa"], name="xGQA analogue exact match").to_frame().T
