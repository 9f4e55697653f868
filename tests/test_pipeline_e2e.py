"""End to end: the demo pipeline on a shrunken world, in a temporary copy of the repository.

Proves the pipeline, not only the units: fetch renders a world, `dvc add data` tracks it, `dvc repro` runs every
stage's notebook through papermill, a second `dvc repro` is a no-op, and a fresh re-render hashes the same.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e

# Small enough for CI on 2 cores, large enough that every stage has data to work with. The point is the
# plumbing (every notebook runs, every declared output appears, reruns are no-ops), not learning: the unit tests
# and the demo's own numbers show learning.
SHRINK = {
    "world": {"n_train": 120, "n_val": 24, "n_test": 24},
    "standins": {"steps": {k: 15 for k in ("vit", "flan_t5", "blip2", "mt0", "bloomz", "nllb")}, "n_eval": 8},
    "warmup": {"steps": 4, "ckpt_every": 2},
    "realign": {"steps": 6, "ckpt_every": 3},
    "eval": {"limit": 4},
    "finetune": {"max_steps": 3},
    "ablations": {"steps": 4, "eval_limit": 2, "init_seeds": [0, 1], "init_budgets": 2},
}
VARIANTS = ["base", "lora_none", "lora_qv", "lora_r32", "qformer_frozen", "no_warmup", "scratch", "english_only",
            "captions_only"]


def run(cmd, cwd, env):
    p = subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output=True)
    if p.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")
    return p.stdout + p.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    dst = tmp_path_factory.mktemp("e2e") / "repo"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, text=True,
                           capture_output=True, check=True).stdout.split("\n")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file() and not f.startswith(("runs/0", "metrics/", "plots/")):
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    for k, v in SHRINK.items():
        params[k] = {**(params.get(k) or {}), **v}
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "HF_HUB_OFFLINE": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"}
    run(["git", "init", "-q"], dst, env)
    run(["git", "add", "-A"], dst, env)
    run(["git", "commit", "-qm", "copy"], dst, env)
    return dst, env


def test_demo_pipeline_end_to_end(repo):
    dst, env = repo
    out = run([sys.executable, "-m", "mblip", "fetch"], dst, env)
    assert "rendered" in out
    run(["dvc", "add", "-q", "data"], dst, env)
    first = run(["dvc", "repro"], dst, env)
    stages = ["fetch", "standins", "translate", "taskmix", "features", "warmup", "realign", "merge", "heldout",
              "evaluate@xgqa", "evaluate@xvnli", "evaluate@marvl", "evaluate@xm3600",
              "ceiling@xgqa", "ceiling@xvnli", "ceiling@marvl", "ceiling@xm3600",
              "finetune@xgqa", "finetune@xvnli", "finetune@marvl",
              *[f"ablate@{v}" for v in VARIANTS], "ablate_init", "report"]
    for stage in stages:
        assert f"Running stage '{stage}'" in first, stage

    counts = json.loads((dst / "metrics/fetch.json").read_text())
    assert counts["scenes.train"] == 120 and counts["scenes.test"] == 24
    assert (dst / "plots/world_grid.png").stat().st_size > 10_000
    executed = json.loads((dst / "runs/01_fetch.ipynb").read_text())
    assert executed["metadata"]["papermill"]["parameters"] == {"params_path": "params.yaml"}

    for bench in ("xgqa", "xvnli", "marvl", "xm3600"):
        m = json.loads((dst / f"metrics/eval/realign/{bench}.json").read_text())
        assert set(m["per_language"]) >= {"en", "de", "zh", "ja", "ar"}
        # the text-only ceiling: the same questions, the LLM reading the scene descriptions
        c = json.loads((dst / f"metrics/eval/ceiling/{bench}.json").read_text())
        assert set(c["per_language"]) == set(m["per_language"]), bench
    assert "by_type" in json.loads((dst / "metrics/eval/ceiling/xgqa.json").read_text())["per_language"]["de"]
    assert json.loads((dst / "metrics/realign.json").read_text())["steps"] == 6
    # the re-aligned model answered the validation mix: eval.limit (4) records per task and language
    held = json.loads((dst / "metrics/heldout.json").read_text())
    assert held["status"] == "ok" and {"match", "verify", "vqa"} <= set(held["per_task"])
    assert "yes_no_accuracy" in held["per_task"]["verify"] and "yes_no_accuracy" not in held["per_task"]["vqa"]
    assert all(m["n"] <= 4 for s in held["per_task"].values() for m in s["per_language"].values())
    assert "held-out scenes" in (dst / "results/tables/heldout.md").read_text()
    from transformers import Blip2ForConditionalGeneration
    Blip2ForConditionalGeneration.from_pretrained(dst / "models/merged")  # merge wrote a plain HF folder
    assert (dst / "results/tables/iglue.md").exists() and "<!-- results:start -->" in (dst / "README.md").read_text()
    # every ablation variant trained for the shrunken budget and was scored; the report collected them
    for v in VARIANTS:
        m = json.loads((dst / f"metrics/ablations/{v}.json").read_text())
        assert m["steps"] == 4 and set(m["xgqa"]) >= {"en", "de", "sw"}, v
    assert json.loads((dst / "metrics/ablations/english_only.json").read_text())["examples"] > 0
    init = json.loads((dst / "metrics/ablations/init.json").read_text())
    assert sorted(init, key=int) == ["2", "4"] and init["4"]["seeds"] == [0, 1]
    # the stage ran its four (init, seed) runs in parallel processes where the machine has the cores; one process
    # gives the same curves
    curves = (dst / "plots/ablations/init_curves.csv").read_text()
    run([sys.executable, "-m", "mblip", "ablate-init"], dst, {**env, "MBLIP_WORKERS": "1"})
    assert (dst / "plots/ablations/init_curves.csv").read_text() == curves
    ablation_md = (dst / "results/tables/ablations.md").read_text()
    assert all(v in ablation_md for v in VARIANTS) and "not run" not in ablation_md
    assert (dst / "results/figures/ablations.png").exists() and (dst / "results/figures/ablation_init_curves.png").exists()
    # every notebook stage but the report recorded its cost; the report tabulates them
    measured = {p.stem for p in (dst / "metrics/resources").glob("*.json")}
    assert measured == {Path(s).stem for s in (dst / "runs").glob("*.ipynb")} - {"11_report"}, measured
    assert json.loads((dst / "metrics/resources/07_realign.json").read_text())["peak_rss_mb"] > 100
    assert "total" in (dst / "results/tables/resources.md").read_text()

    # a second repro and a second fetch change nothing
    second = run(["dvc", "repro"], dst, env)
    assert "Running stage" not in second

    # an ablation reruns only the stages that read its section
    exp = run(["dvc", "exp", "run", "-S", "lora.rank=4"], dst, env)
    rerun = {s for s in stages if f"Running stage '{s}'" in exp}
    assert rerun == {"realign", "merge", "heldout", "evaluate@xgqa", "evaluate@xvnli", "evaluate@marvl", "evaluate@xm3600",
                     "finetune@xgqa", "finetune@xvnli", "finetune@marvl", *[f"ablate@{v}" for v in VARIANTS],
                     "ablate_init", "report"}, rerun
    assert "up to date" in run([sys.executable, "-m", "mblip", "fetch"], dst, env)
    assert "up to date" in run(["dvc", "status"], dst, env).lower()

    # a forced re-render is byte-identical: data.dvc's hash does not move
    before = (dst / "data.dvc").read_text()
    run([sys.executable, "-m", "mblip", "fetch", "--force"], dst, env)
    assert "up to date" in run(["dvc", "status"], dst, env).lower()
    assert (dst / "data.dvc").read_text() == before

    # editing one section of the preset file outdates the stages that read it, not the world or the stand-ins
    preset = dst / "mblip/presets/demo.yaml"
    text = preset.read_text()
    preset.write_text(text.replace("  lr_lora: ", "  lr_lora: 0.5e-3 #", 1))
    stale = {ln.rstrip(":") for ln in run(["dvc", "status"], dst, env).splitlines() if re.match(r"^\S+:$", ln)}
    assert "realign" in stale and "ablate_init" in stale, stale
    assert not stale & {"fetch", "standins", "translate", "taskmix", "features", "warmup"}, stale
    preset.write_text(text)
    assert "up to date" in run(["dvc", "status"], dst, env).lower()


def test_remote_round_trip_push_clone_pull_is_a_no_op(repo, tmp_path):
    """Share through a DVC remote: push, clone elsewhere, pull, and nothing is left to reproduce."""
    dst, env = repo
    if not (dst / "dvc.lock").exists():
        pytest.skip("needs the pipeline run of test_demo_pipeline_end_to_end")
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-f", "-d", "local", str(remote)], dst, env)
    run(["git", "add", "-A"], dst, env)
    run(["git", "commit", "-qm", "pipeline run"], dst, env)
    run(["dvc", "push", "-q"], dst, env)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(dst), str(clone)], tmp_path, env)
    run(["dvc", "pull", "-q"], clone, env)
    assert (clone / "models/realign/final/trainable.safetensors").exists()
    assert "up to date" in run(["dvc", "status"], clone, env).lower()
    assert "Running stage" not in run(["dvc", "repro"], clone, env)


def test_user_notebooks_run_on_the_pipelines_models(repo, tmp_path):
    """The notebooks for users, not stages: `tour` captions a held-out scene and answers the default question in
    German; `finetune_own` writes its example files, fine-tunes on them and scores before and after (≈ 25 s)."""
    import nbformat
    import papermill

    dst, _ = repo
    if not (dst / "models/merged/config.json").exists():
        pytest.skip("needs the pipeline run of test_demo_pipeline_end_to_end")

    def execute(name, **params):
        out = tmp_path / f"{name}.ipynb"
        papermill.execute_notebook(str(dst / f"notebooks/{name}.ipynb"), str(out), kernel_name="python3",
                                   parameters={"params_path": "params.yaml", **params}, cwd=str(dst),
                                   progress_bar=False)
        nb = nbformat.read(out, as_version=4)
        return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                       if o.output_type == "stream")

    text = execute("tour", language="de")
    caption = re.search(r"^caption \[de\]: (.*)$", text, re.M)
    assert caption and caption.group(1).strip(), text[-3000:]
    assert "question [de]: Wie viele Figuren gibt es?" in text and re.search(r"^answer: ", text, re.M)

    text = execute("finetune_own", steps=2)
    own = dst / "models/own"
    summary = json.loads((own / "scores.json").read_text())
    assert summary["steps"] == 2 and summary["train_examples"] > 0
    for when in ("before", "after"):
        scores = summary["scores"][when]
        assert set(scores) >= {"en", "de", "sw", "all"}, scores
        assert 0 <= scores["all"]["exact_match"] <= 1 and 0 <= scores["all"]["token_f1"] <= 1
    assert re.search(r"exact match after fine-tuning: \d\.\d{3} \(before: \d\.\d{3}\)", text), text[-3000:]
    assert (own / "final/trainable.safetensors").exists() and (own / "step-00000002/optimizer.pt").exists()
    assert (own / "example/train.jsonl").exists() and (own / "predictions.jsonl").exists()
