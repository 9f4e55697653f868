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
# # 14 · ceiling — the LLM reading the scene description instead of the image
# The experiment's own LLM (`models.llm`, the stand-in "mT0" in the demo) answers one benchmark with the scene
# description in place of the visual tokens: the same files, prompts, decoding and metric as the re-aligned model
# (`09_evaluate`). What the re-aligned model scores below it is what the visual side did not carry over from the
# image. Only the demo world has descriptions: with paper data this stage records "not applicable".
#
# Inputs: `models/standins/`, `data/`. Outputs: `metrics/eval/ceiling/<bench>.json`,
# `plots/eval/ceiling/<bench>.csv`, `artifacts/eval/ceiling/<bench>/`.

# %% tags=["parameters"]
params_path = "params.yaml"
bench = "xgqa"

# %%
import pandas as pd
from mblip import ceiling, config

cfg = config.load(params_path)
result = ceiling.evaluate(cfg, bench)
rows = pd.DataFrame(result.rows if result else [])
rows.pivot_table(index="lang", columns="metric", values="value") if len(rows) else ceiling.NOT_APPLICABLE

# %% [markdown]
# Some predictions, each on the scene description of its image.

# %%
pd.read_json(result.predictions_path, lines=True).groupby("lang").head(2) if result else None
