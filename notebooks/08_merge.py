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
# # 08 · merge — fold the LoRA into the LLM
# As the authors do before task fine-tuning: the re-alignment LoRA is merged into the LLM weights and the whole
# model is written as a plain `Blip2ForConditionalGeneration` folder that `transformers` loads by itself.
#
# Inputs: `models/realign/`. Outputs: `models/merged/`.

# %% tags=["parameters"]
params_path = "params.yaml"

# %%
from transformers import Blip2ForConditionalGeneration
from mblip import config, realign

cfg = config.load(params_path)
out = realign.merge(cfg)
hf = Blip2ForConditionalGeneration.from_pretrained(out["folder"])
print(out["folder"], f"{sum(p.numel() for p in hf.parameters()):,} parameters")
