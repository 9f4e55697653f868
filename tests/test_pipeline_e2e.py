"""End to end: the demo pipeline on a shrunken world, in a temporary copy of the repository.

Proves the pipeline, not only the units: fetch renders a world, `dvc add data` tracks it, `dvc repro` runs every
stage's notebook through papermill, a second `dvc repro` is a no-op, and a fresh re-render hashes the same.
"""
import json
import os
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
}


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
    stages = ["fetch", "standins", "translate", "taskmix", "features", "warmup", "realign", "merge",
              "evaluate@xgqa", "evaluate@xvnli", "evaluate@marvl", "evaluate@xm3600",
              "finetune@xgqa", "finetune@xvnli", "finetune@marvl", "report"]
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
    assert json.loads((dst / "metrics/realign.json").read_text())["steps"] == 6
    from transformers import Blip2ForConditionalGeneration
    Blip2ForConditionalGeneration.from_pretrained(dst / "models/merged")  # merge wrote a plain HF folder
    assert (dst / "results/tables/iglue.md").exists() and "<!-- results:start -->" in (dst / "README.md").read_text()

    # a second repro and a second fetch change nothing
    second = run(["dvc", "repro"], dst, env)
    assert "Running stage" not in second

    # an ablation reruns only the stages that read its section
    exp = run(["dvc", "exp", "run", "-S", "lora.rank=4"], dst, env)
    rerun = {s for s in stages if f"Running stage '{s}'" in exp}
    assert rerun == {"realign", "merge", "evaluate@xgqa", "evaluate@xvnli", "evaluate@marvl", "evaluate@xm3600",
                     "finetune@xgqa", "finetune@xvnli", "finetune@marvl", "report"}, rerun
    assert "up to date" in run([sys.executable, "-m", "mblip", "fetch"], dst, env)
    assert "up to date" in run(["dvc", "status"], dst, env).lower()

    # a forced re-render is byte-identical: data.dvc's hash does not move
    before = (dst / "data.dvc").read_text()
    run([sys.executable, "-m", "mblip", "fetch", "--force"], dst, env)
    assert "up to date" in run(["dvc", "status"], dst, env).lower()
    assert (dst / "data.dvc").read_text() == before


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
