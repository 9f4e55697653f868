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
# # 05 · features — the frozen ViT, run once
# BLIP-2's vision encoder stays frozen through every stage of mBLIP, so its outputs are computed once per image
# and cached; warm-up, re-alignment, fine-tuning and evaluation read the cache instead of pixels.
#
# Inputs: `data/`, the BLIP-2 checkpoint. Outputs: `artifacts/features/{vit.safetensors,index.json}`.

# %% tags=["parameters"]
params_path = "params.yaml"

# %%
from mblip import config, realign

cfg = config.load(params_path)
realign.compute_features(cfg)
