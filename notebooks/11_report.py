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
# # 11 · report — the paper's tables and figures
# Regenerates every table and figure from what the earlier stages wrote (no model is loaded): IGLUE zero-shot and
# fine-tuned, XM3600 per language, MaXM, POPE/CHAIR, the stand-ins' ceiling beside the re-aligned model, learning
# curves, translation quality and sample predictions. A benchmark this preset does not run appears as "not run",
# never as a number; the "paper" columns stay empty until a reported value is recorded with its source
# (`mblip.report.PAPER_VALUES`). Finally the README's results section is rewritten from `results/summary.md`.
#
# Inputs: `metrics/`, `plots/`, `artifacts/eval/` (+ the test images under `data/` for the sample grid).
# Outputs: `results/tables/*.{csv,md}`, `results/figures/*.png`, `results/summary.md`, README results section.

# %% tags=["parameters"]
params_path = "params.yaml"

# %%
from IPython.display import Image, Markdown, display
from mblip import config, report

cfg = config.load(params_path)
result = report.build(cfg)
print(f"{len(result['files'])} files in {result['summary'].parent}")
for line in result["not_run"] + result["warnings"]:
    print(" ·", line)

# %% [markdown]
# IGLUE: English, the average over the other languages, and every language (×100).

# %%
result["tables"]["iglue"]

# %% [markdown]
# XM3600 zero-shot CIDEr per language, and the text-only stand-ins (the ceiling) beside the re-aligned model.

# %%
display(result["tables"]["xm3600"], result["tables"]["standins"])

# %% [markdown]
# The figures.

# %%
for name, path in result["figures"].items():
    display(Markdown(f"**{name.replace('_', ' ')}**"), Image(filename=str(path)))

# %% [markdown]
# The README's results section (between `<!-- results:start -->` and `<!-- results:end -->`).

# %%
changed = report.update_readme(cfg.repo_root / "README.md", result["summary"].parent)
print("README", "updated" if changed else "already up to date")
