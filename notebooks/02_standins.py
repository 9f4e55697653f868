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
# # 02 · standins — the pretrained parts
# The paper starts from downloaded checkpoints (BLIP-2 Flan-T5-XL, mT0-XL / BLOOMZ-7B1, NLLB-200). The demo
# trains tiny versions of each from the demo world, in the order the real ones came to be — a vision encoder on
# its own, an English LM, an English BLIP-2 aligned to it, a multilingual seq2seq "mT0" and causal "BLOOMZ" that
# caption and answer from a *textual* scene description, and an "NLLB" translator — and saves them with
# `save_pretrained`, so every later stage loads them with `from_pretrained(path)` exactly like hub ids.
# With `standins.train: false` (the paper presets) the stage only records which hub ids the run uses.
#
# Inputs: `params.yaml`. Outputs: `models/standins/`, `metrics/standins.json`.

# %% tags=["parameters"]
params_path = "params.yaml"

# %%
import json
import pandas as pd
from mblip import config, stages

cfg = config.load(params_path)
metrics = stages.standins(cfg)

# %% [markdown]
# Held-out quality of each stand-in (the text-only LMs' QA accuracy is the ceiling for the re-aligned model).

# %%
pd.json_normalize(metrics, sep=".").T.rename(columns={0: "value"})
