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
# # 09 · evaluate — one benchmark, zero-shot
# The re-aligned model (no task fine-tuning) on one benchmark, with the protocol's prompt, decoding (beam 5,
# length penalty, max new tokens) and metric, in every language of the benchmark. Predictions are kept.
#
# Inputs: `models/realign/`, `data/`. Outputs: `metrics/eval/realign/<bench>.json`,
# `plots/eval/realign/<bench>.csv`, `artifacts/eval/realign/<bench>/`.

# %% tags=["parameters"]
params_path = "params.yaml"
bench = "xgqa"

# %%
import pandas as pd
from mblip import config, realign

cfg = config.load(params_path)
result = realign.evaluate(cfg, bench)
rows = pd.DataFrame(result.rows)
rows.pivot_table(index="lang", columns="metric", values="value")

# %% [markdown]
# Some predictions.

# %%
pd.read_json(result.predictions_path, lines=True).groupby("lang").head(2)
