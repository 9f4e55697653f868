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
# # 07 · realign — move the English Q-Former onto the multilingual LLM
# The heart of mBLIP. BLIP-2's ViT (frozen), Q-Former and query tokens (aligned to an English LLM) are grafted onto
# the multilingual LLM through the projection; the Q-Former, query tokens and projection train fully and the LLM
# with LoRA (frozen base, 8-/4-bit on a GPU), on the multilingual task mix.
#
# Inputs: `models/warmup/`, `artifacts/taskmix/`, `artifacts/features/`. Outputs: `models/realign/`,
# `metrics/realign.json`, `plots/realign_history.csv`.

# %% tags=["parameters"]
params_path = "params.yaml"

# %%
import pandas as pd
from mblip import config, realign, tour
from mblip.model import format_parameters_table, trainable_parameters_table

cfg = config.load(params_path)
run = realign.realign(cfg)
model = run["model"]
print(f"{run['examples']} examples; projection from warm-up: {run['warm_projection']}")

# %% [markdown]
# What trains (the paper: ≈124M of ≈4.9B at mT0-XL shapes).

# %%
print(format_parameters_table(trainable_parameters_table(model)))

# %%
hist = pd.read_csv(cfg.repo_root / "plots/realign_history.csv")
hist.plot(x="step", y="loss", figsize=(6, 3), title="re-alignment loss")

# %% [markdown]
# Greedy outputs on held-out test scenes, in several languages.

# %%
show = tour.sample_outputs(cfg, model, n_scenes=4)
tour.show_samples(cfg, show)
