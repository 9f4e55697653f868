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
# # 15 · heldout — the re-aligned model on its own tasks, on held-out scenes
# The taskmix stage writes a validation mix beside the training one (`artifacts/taskmix/val/`: in the demo world the
# held-out scenes with every language's gold text). Here the re-aligned model answers every record with the record's
# own prompt, and each task is scored per language (`mblip.heldout`): exact match and token F1 for every task, and
# for the yes / no tasks (matching, verify) the accuracy of the decision and the share of "yes" answers. A yes / no
# task at 50 % with a "yes" share near 100 % was not learned, however low the training loss went. This is not one
# of the paper's benchmarks; it tells which parts of the mix re-alignment learned.
#
# Inputs: `models/realign/`, `artifacts/taskmix/val/`, `artifacts/features/`. Outputs: `metrics/heldout.json`,
# `plots/heldout.csv`, `artifacts/heldout/predictions.jsonl`.

# %% tags=["parameters"]
params_path = "params.yaml"

# %%
import pandas as pd
from mblip import config, heldout

cfg = config.load(params_path)
metrics = heldout.run(cfg)
rows = pd.DataFrame(heldout.rows(metrics["per_task"], "realign")) if metrics["status"] == "ok" else None
rows.query("lang == 'all'").pivot_table(index="task", columns="metric", values="value").round(3) \
    if rows is not None else metrics["status"]

# %% [markdown]
# Per language (exact match).

# %%
rows.query("metric == 'exact_match' and lang != 'all'").pivot_table(index="task", columns="lang", values="value") \
    .round(3) if rows is not None else None

# %% [markdown]
# Some answers of the yes / no tasks and of the questions, beside their targets.

# %%
pred = pd.read_json(cfg.repo_root / "artifacts/heldout/predictions.jsonl", lines=True) if rows is not None else None
pred[pred.task.isin(["match", "verify", "vqa"])].groupby("task").head(4)[["task", "lang", "prompt", "target",
                                                                             "prediction"]] if pred is not None else None
