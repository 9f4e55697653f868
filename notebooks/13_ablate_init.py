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
# # 13 · ablate_init — bootstrapped vs randomly initialised Q-Former, over seeds
# The paper's central claim: starting from BLIP-2's English-aligned Q-Former beats a randomly initialised one at
# equal steps. Both re-align on the same task mix with the same settings, for each seed in `ablations.init_seeds`
# (the seed sets the initialisation of what is new and the data order, paired across the two); every run is scored
# at `ablations.init_budgets` evenly spaced checkpoints on the xGQA analogue.
#
# Inputs: as the realign stage. Outputs: `metrics/ablations/init.json` (per budget: mean and sd of each init, and of
# the paired gap), `plots/ablations/init_curves.csv` (long format: init, seed, step, lang, accuracy).

# %% tags=["parameters"]
params_path = "params.yaml"

# %%
import pandas as pd
from mblip import ablations, config, report

cfg = config.load(params_path)
out = ablations.init_ablation(cfg)
pd.DataFrame(out["summary"]).T

# %%
curves = pd.DataFrame(out["rows"])
path = report.init_curves_figure(curves, cfg.repo_root / "plots/ablations/init_curves.png")
from IPython.display import Image
Image(str(path))
