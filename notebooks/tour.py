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
# # Tour · caption a picture and ask about it, in your language
# Not a pipeline stage: try a trained model on any image. The image goes through BLIP-2's frozen ViT and image
# processor (`realign.features_for_images`, the same computation as the `features` stage), then the model
# captions it with XM3600's evaluation prompt and answers a question with xGQA's, greedy decoding.
#
# Parameters: `model` is a folder under `models/`: `realign` (zero-shot), `merged`, `finetune/xgqa` (or
# `finetune-xgqa`), `own` (from `finetune_own`). `image` is the path of any PNG/JPEG; empty = a held-out scene
# of the demo world. `language` is a language code (`de`, `sw`, `ja`, ...). `question` empty = "How many objects
# are there?" in that language. xGQA's prompt asks for the answer in English, whatever the question's language.

# %% tags=["parameters"]
params_path = "params.yaml"
model = "realign"
image = ""
language = "de"
question = ""

# %%
from mblip import config, realign, tour

cfg = config.load(params_path)
mblip_model = realign.load_model(cfg, model)
path = tour.resolve_path(cfg, image) if image else tour.demo_image(cfg)
tour.show_image(path)

# %%
out = tour.describe_image(cfg, mblip_model, path, language, question)
print(f"caption [{language}]: {out['caption']}")
print(f"question [{language}]: {out['question']}")
print(f"answer: {out['answer']}")
out["prompts"]
