"""Repository contracts: pins, environment.yml, notebooks, dvc.yaml."""
import dataclasses
import json
import re
from pathlib import Path

import yaml

from mblip.config import PRESETS, Config, preset_path

ROOT = Path(__file__).resolve().parents[1]
# the preset file, as dvc.yaml names it, and the config sections a preset holds (params.yaml alone holds the rest)
PRESET = "mblip/presets/${preset}.yaml"
PRESET_SECTIONS = [f.name for f in dataclasses.fields(Config) if f.name not in ("preset", "seed", "lora")]


def test_torch_is_pinned_without_local_tag_everywhere():
    for name in ("requirements.txt", "constraints.txt"):
        lines = (ROOT / name).read_text().splitlines()
        torch = [l for l in lines if re.match(r"^torch\b", l)]
        assert torch == ["torch==2.13.0"], f"{name}: {torch}"
    reqs = [l for l in (ROOT / "requirements.txt").read_text().splitlines() if l and not l.startswith("#")]
    unpinned = [l for l in reqs if "==" not in l]
    assert not unpinned, f"requirements.txt must pin exactly: {unpinned}"
    assert not any(l.startswith(("nvidia-", "triton")) for l in (ROOT / "constraints.txt").read_text().splitlines())


def test_environment_yml_uses_the_same_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert "-r requirements.txt" in pip and "-c constraints.txt" in pip


def _cells(nb):
    return [(c["cell_type"], "".join(c["source"]).strip()) for c in nb["cells"]]


def test_notebooks_are_clean_paired_and_take_only_params_path():
    import jupytext
    import papermill
    nbs = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert nbs
    for p in nbs:
        nb = json.loads(p.read_text())
        assert not any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), f"{p.name} has outputs"
        paired = jupytext.read(p.with_suffix(".py"))
        assert _cells(nb) == [(c.cell_type, c.source.strip()) for c in paired.cells], \
            f"{p.name} and {p.with_suffix('.py').name} differ: run `jupytext --sync {p.with_suffix('.py')}`"
        params = papermill.inspect_notebook(str(p))
        # only selectors go through papermill; the notebook reads everything else from params.yaml
        assert set(params) <= {"params_path", "bench", "task", "variant"}, f"{p.name}: {set(params)}"


def test_dvc_stages_run_their_notebook_and_track_the_sections_they_read():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name, st in dvc["stages"].items():
        st = st.get("do", st)  # foreach stages
        cmd = st["cmd"] if isinstance(st["cmd"], str) else " ".join(st["cmd"])
        nb = re.search(r"notebooks/\S+\.ipynb", cmd).group(0)
        assert nb in st["deps"], f"stage {name}: notebook {nb} is not a dependency"
        assert PRESET not in st["deps"], \
            f"stage {name}: the whole preset file as a dependency reruns it on any preset edit; track its sections"
        files = {k: v for p in st["params"] for k, v in p.items()}
        assert set(files) <= {"params.yaml", PRESET}, f"stage {name}: params from {set(files)}"
        for key in files["params.yaml"]:
            assert key.split(".")[0] in params, f"stage {name}: param {key} is not in params.yaml"
        # the preset's sections are tracked exactly where params.yaml's same-named sections are
        assert files.get(PRESET, []) == [k for k in files["params.yaml"] if k in PRESET_SECTIONS], \
            f"stage {name}: preset sections {files.get(PRESET)} do not mirror params.yaml's {files['params.yaml']}"


def test_every_preset_lists_every_section_dvc_tracks():
    """DVC stops with "Parameters 'x' are missing" when a tracked section is absent from the preset file."""
    for preset in PRESETS:
        raw = yaml.safe_load(preset_path(preset).read_text())
        assert sorted(raw) == sorted(PRESET_SECTIONS), f"{preset}: {sorted(set(PRESET_SECTIONS) ^ set(raw))}"


def test_every_stage_dependency_exists_and_code_folders_ignore_bytecode():
    """A renamed module must not leave a stale path in dvc.yaml (the stage would fail on a fresh clone), and a
    dependency that is a folder of Python code must not change when Python writes __pycache__ into it (DVC hashes
    every file of a folder dependency that .dvcignore does not exclude)."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    ignored = (ROOT / ".dvcignore").read_text().split()
    generated = {out if isinstance(out, str) else next(iter(out))
                 for st in dvc["stages"].values() for out in st.get("do", st).get("outs", [])}
    for name, st in dvc["stages"].items():
        for dep in st.get("do", st)["deps"]:
            path = dep.replace("${preset}", "demo")
            if "${" in path or path in generated or path.split("/")[0] in ("data", "models", "artifacts"):
                continue  # made by an earlier stage (or by `mblip fetch`), or per foreach item
            assert (ROOT / path).exists(), f"stage {name}: dependency {dep} does not exist"
            if (ROOT / path).is_dir() and any((ROOT / path).rglob("*.py")):
                assert "__pycache__/" in ignored, f"stage {name}: folder {dep} holds Python code; add __pycache__/ to .dvcignore"
