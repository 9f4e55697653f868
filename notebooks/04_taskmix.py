# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python (mblip)
#     language: python
#     name: mblip
# ---

# %% [markdown]
# # 04 · taskmix — the multilingual instruction mix
# One record per example, `{id, image, lang, task, prompt, target}`, built from the English annotations with
# the protocol's templates, language assignment and translation rules (see `mblip/taskmix.py`). A validation
# mix is built the same way from the held-out split with gold text.
#
# Inputs: `data/`, `artifacts/translate/`. Outputs: `artifacts/taskmix/{train,val}/<task>.jsonl`,
# `metrics/taskmix.json`, `plots/taskmix_counts.csv`.

# %% tags=["parameters"]
params_path = "params.yaml"

# %%
import pandas as pd
from mblip import config, stages

cfg = config.load(params_path)
result = stages.taskmix(cfg)
print(f"{result['total']} training examples, {result['val']} validation examples")
if result.get("val_note"):
    print(result["val_note"])

# %% [markdown]
# Examples per task and language.

# %%
counts = pd.DataFrame(result["counts"]).fillna(0).astype(int)
counts

# %% [markdown]
# A few records (with `taskmix.released`, from a sample of the converted file).

# %%
pd.DataFrame(result["records"][::max(1, len(result["records"]) // 10)])[["lang", "task", "prompt", "target"]]
