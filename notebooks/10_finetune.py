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
# # 10 · finetune — one task, English data, then every language
# The IGLUE protocol: the merged re-aligned model gets a new LoRA and is fine-tuned on the task's *English*
# training data only, then evaluated zero-shot cross-lingually in every language of the benchmark.
#
# Inputs: `models/merged/`, `data/`. Outputs: `models/finetune/<task>/`, `metrics/finetune_<task>.json`,
# `metrics/eval/finetune-<task>/<task>.json`, `plots/finetune_<task>_history.csv`.

# %% tags=["parameters"]
params_path = "params.yaml"
task = "xgqa"

# %%
import pandas as pd
from mblip import config, realign

cfg = config.load(params_path)
out = realign.finetune(cfg, task)
print(f"{out['examples']} English examples, {out['steps']} steps")

# %%
pd.DataFrame(out["metrics"]["per_language"]).T
