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
# # Fine-tune on your own data, in any language
# Not a pipeline stage. The merged re-aligned model (`models/merged`) gets a new LoRA and is fine-tuned on your
# records exactly as the `finetune` stage fine-tunes on a benchmark (same training loop and settings), then
# scored on your evaluation records before and after: exact match (xGQA's normalisation) and token F1, per
# language, greedy decoding.
#
# Your files are JSONL in the task mix's record schema, one record per line, every value a non-empty string:
#
#     {"id": "q1", "image": "photos/cat.jpg", "lang": "de", "task": "vqa",
#      "prompt": "Question: Welche Farbe hat die Katze? Short answer in English:", "target": "black"}
#
# `image` is an absolute path or relative to the JSONL file's folder, the data folder or the repository. Every
# line is checked before anything loads; a bad one stops with the file, line number and key.
#
# Parameters: `train_jsonl`, `eval_jsonl`; `steps` (optimizer steps); `lr` (None = the config's xGQA fine-tuning
# LR); `out_dir` (weights in `<out_dir>/final`, then `model = "own"` in the tour notebook).

# %% tags=["parameters"]
params_path = "params.yaml"
train_jsonl = ""
eval_jsonl = ""
steps = 40
lr = None
out_dir = "models/own"

# %% [markdown]
# **Out of the box**: with `train_jsonl` and `eval_jsonl` empty, the next cell writes a small example into
# `<out_dir>/example/`: questions of the demo world's xGQA analogue about its held-out test scenes, in every demo
# language, the first half of the scenes for training and the other half for evaluation.

# %%
import pandas as pd
from mblip import config, own, tour

cfg = config.load(params_path)
if not (train_jsonl and eval_jsonl):
    train_jsonl, eval_jsonl = own.example_own_jsonl(cfg, cfg.repo_root / out_dir / "example")
    print("example data:", train_jsonl, eval_jsonl, sep="\n  ")
pd.read_json(tour.resolve_path(cfg, train_jsonl), lines=True).head(3)

# %%
run = own.finetune_own(cfg, train_jsonl, eval_jsonl, steps=steps, lr=lr, out_dir=out_dir)
print(f"{run['train_examples']} training records, {run['steps']} steps (batch {run['batch_size']}, lr {run['lr']}), "
      f"final loss {run['final_loss']:.4f}; weights in {run['out_dir'] / 'final'}")

# %% [markdown]
# Scores on `eval_jsonl`, before and after fine-tuning (`<out_dir>/scores.json`; outputs in `predictions.jsonl`).

# %%
scores = pd.concat({k: pd.DataFrame(v).T for k, v in run["scores"].items()}, axis=1)
print(f"exact match after fine-tuning: {run['scores']['after']['all']['exact_match']:.3f} "
      f"(before: {run['scores']['before']['all']['exact_match']:.3f})")
scores
