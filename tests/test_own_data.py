"""Your own images and data: record validation, token F1, ViT features of any image file, loading a trained model by
folder, the example files and `finetune_own`, on tiny models; the two user notebooks are clean and paired.
(tests/test_pipeline_e2e.py runs both notebooks against a real pipeline run.)"""
import json
from pathlib import Path

import pytest
import yaml

from mblip import metrics as M
from mblip import own, tour
from mblip import taskmix as TM

ROOT = Path(__file__).resolve().parents[1]
GOOD = {"id": "a1", "image": "img/a.png", "lang": "de", "task": "vqa", "prompt": "Welche Farbe?", "target": "rot"}


def write_lines(path, lines):
    path.write_bytes(b"".join((l if isinstance(l, bytes) else l.encode("utf-8")) + b"\n" for l in lines))
    return path


# ------------------------------------------------------------------------------------------------ validation
def test_validate_jsonl_reads_records_and_skips_blank_lines(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img/a.png").write_bytes(b"x")
    f = write_lines(tmp_path / "own.jsonl", [json.dumps(GOOD), "", json.dumps({**GOOD, "id": "a2", "extra": 1})])
    rows = TM.validate_jsonl(f, image_roots=[tmp_path])
    assert [r["id"] for r in rows] == ["a1", "a2"] and rows[1]["extra"] == 1
    assert TM.resolve_image("img/a.png", [tmp_path / "nope", tmp_path]) == tmp_path / "img/a.png"


@pytest.mark.parametrize("line, expect", [
    ('{"id": "a1", "image": ', "line 2: not valid JSON"),
    ('["a list"]', "line 2: expected a JSON object"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "target"}), "line 2: missing key 'target'"),
    (json.dumps({k: v for k, v in GOOD.items() if k not in ("prompt", "lang")}), "line 2: missing keys 'lang', 'prompt'"),
    (json.dumps({**GOOD, "target": 3}), "line 2: key 'target' must be a non-empty string, got 3"),
    (json.dumps({**GOOD, "prompt": " "}), "line 2: key 'prompt' must be a non-empty string"),
    (json.dumps({**GOOD, "lang": "jp"}), "line 2: key 'lang': lang 'jp' is a country code"),
    (b'{"id": "\xff"}', "line 2: not UTF-8"),
])
def test_validate_jsonl_names_file_line_and_key(tmp_path, line, expect):
    f = write_lines(tmp_path / "own.jsonl", [json.dumps(GOOD), line])
    with pytest.raises(TM.RecordError) as e:
        TM.validate_jsonl(f)
    assert str(f) in str(e.value) and expect in str(e.value), str(e.value)


def test_validate_jsonl_missing_image_and_empty_file(tmp_path):
    f = write_lines(tmp_path / "own.jsonl", [json.dumps(GOOD)])
    with pytest.raises(TM.RecordError, match=r"own.jsonl, line 1: key 'image': no file 'img/a.png'"):
        TM.validate_jsonl(f, image_roots=[tmp_path])
    with pytest.raises(TM.RecordError, match="no records"):
        TM.validate_jsonl(write_lines(tmp_path / "empty.jsonl", [""]))
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        TM.validate_jsonl(tmp_path / "missing.jsonl")


# ------------------------------------------------------------------------------------------------ token F1
def test_token_f1():
    assert M.token_f1(["a red circle"], ["A red circle."]) == 1.0
    assert M.token_f1(["red circle"], ["a red square"]) == pytest.approx(2 * 1 / (2 + 3))
    assert M.token_f1(["红色圆形"], ["红色正方形"], "zh") == pytest.approx(2 * 3 / (4 + 5))  # per character: 红 色 形
    assert M.token_f1(["", "x"], ["", ""], ["en", "en"]) == 0.5
    with pytest.raises(ValueError, match="languages"):
        M.token_f1(["a"], ["a"], ["en", "de"])


def test_score_own_per_language_and_all():
    from mblip.own import score_own
    recs = [{"lang": "de", "target": "rot"}, {"lang": "de", "target": "blau"}, {"lang": "sw", "target": "nyekundu"}]
    s = score_own(recs, ["Rot.", "grün", "nyekundu"])
    assert list(s) == ["de", "sw", "all"]
    assert s["de"] == {"n": 2, "exact_match": 0.5, "token_f1": 0.5}
    assert s["all"]["exact_match"] == pytest.approx(2 / 3)


# ------------------------------------------------------------------------------------------------ tiny repo
@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny):
    """A repository root with a tiny rendered world, params pointing at the tiny BLIP-2 + mT5, and the realign
    (trainable weights) and merged (plain BLIP-2) models the pipeline would have written."""
    import torch

    from mblip.demo.build import build_world
    from mblip.model import build_mblip
    root = tmp_path_factory.mktemp("own") / "repo"
    root.mkdir()
    params = {"preset": "demo", "seed": 0, "languages": {"use": ["en", "de"]},
              "models": {"blip2": str(tiny["blip2"]), "llm": str(tiny["mt5"]), "projection": "reuse"},
              "lora": {"rank": 4, "alpha": 8, "dropout": 0.0, "scope": "all"},
              "finetune": {"micro_batch_size": 4, "batch_size": {"xgqa": 8, "xvnli": 8, "marvl": 8}}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    build_world(root / "data/demo", n_train=2, n_val=2, n_test=6, image_size=32, max_objects=2, seed=1,
                languages=["en", "de"])
    torch.manual_seed(0)
    m = build_mblip(tiny["blip2"], tiny["mt5"], projection="reuse", lora_rank=4, lora_alpha=8, lora_dropout=0.0,
                    lora_scope="all", stage="realign", device="cpu", seed=0)
    m.save_trainable(root / "models/realign/final")
    m.export(root / "models/merged")
    return root


@pytest.fixture()
def cfg(repo, monkeypatch):
    from mblip import config
    monkeypatch.chdir(repo)
    return config.load("params.yaml")


def test_features_of_any_image_match_the_features_stage(cfg, repo, tmp_path):
    import numpy as np
    import torch
    from PIL import Image

    from mblip import realign as R
    R.compute_features(cfg)
    cached = R.Features(repo)
    world = tour.demo_image(cfg, 1)
    assert world.name == "test-000001.png"
    jpeg = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(jpeg)
    feats = R.FileFeatures(cfg, [world, jpeg])
    assert torch.equal(feats(world), cached(f"images/{world.name}"))
    assert feats(jpeg).shape == feats(world).shape
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(ValueError, match="bad.png: not an image"):
        R.features_for_images(cfg, [tmp_path / "bad.png"])


def test_load_model_by_folder_and_describe_an_image(cfg):
    from mblip import realign as R
    assert R.trained_models(cfg) == ["merged", "realign"]
    with pytest.raises(FileNotFoundError, match=r"trained models here: merged, realign"):
        R.load_model(cfg, "finetune-xgqa")
    merged = R.load_model(cfg, "merged")
    assert merged.stage == "eval"
    out = tour.describe_image(cfg, R.load_model(cfg, "realign"), "data/demo/images/test-000000.png", "de")
    assert out["question"] == tour.default_question("de") == "Wie viele Figuren gibt es?"
    assert out["prompts"] == {"caption": "Caption in German: ",
                              "answer": "Question: Wie viele Figuren gibt es? Short answer in English:"}
    assert isinstance(out["caption"], str) and isinstance(out["answer"], str)
    assert tour.caption_prompt("yo") == "Caption in Yoruba: "  # not an XM3600 language: the paper table's name


def test_example_files_and_finetune_own(cfg, repo):
    from mblip import realign as R
    train, ev = own.example_own_jsonl(cfg, repo / "models/own/example", n_train=6, n_eval=4)
    tr_rows, ev_rows = TM.validate_jsonl(train), TM.validate_jsonl(ev)
    assert {r["lang"] for r in tr_rows} == {"en", "de"} and len(ev_rows) == 8
    assert not {r["image"] for r in tr_rows} & {r["image"] for r in ev_rows}  # held-out scenes, split by image
    assert len({r["image"] for r in ev_rows if r["lang"] == "en"}) == 3  # spread over the scenes

    bad = repo / "bad.jsonl"
    bad.write_text(json.dumps({**tr_rows[0], "image": "images/none.png"}) + "\n")
    with pytest.raises(TM.RecordError, match=r"bad.jsonl, line 1: key 'image'"):
        own.finetune_own(cfg, bad, ev, steps=2)
    run = own.finetune_own(cfg, train, ev, steps=2, lr=1e-3)
    out = repo / "models/own"
    assert (out / "final/trainable.safetensors").exists() and (out / "step-00000002").is_dir()
    saved = json.loads((out / "scores.json").read_text())
    assert saved["steps"] == 2 and saved["batch_size"] == 8 and saved["train_examples"] == 12
    for when in ("before", "after"):
        assert set(saved["scores"][when]) == {"en", "de", "all"} and saved["scores"][when]["all"]["n"] == 8
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 8
    assert R.load_model(cfg, "own").stage == "finetune"
    # a second run starts over instead of resuming a run with other settings
    own.finetune_own(cfg, train, ev, steps=3, lr=1e-3)
    assert sorted(p.name for p in out.glob("step-*")) == ["step-00000003"]
    assert run["model"] is not None


# ------------------------------------------------------------------------------------------------ notebooks
@pytest.mark.parametrize("name, params", [
    ("tour", {"params_path", "model", "image", "language", "question"}),
    ("finetune_own", {"params_path", "train_jsonl", "eval_jsonl", "steps", "lr", "out_dir"}),
])
def test_user_notebooks_are_clean_paired_and_take_their_parameters(name, params):
    import jupytext
    import papermill
    p = ROOT / "notebooks" / f"{name}.ipynb"
    nb = json.loads(p.read_text())
    assert not any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), f"{p.name} has outputs"
    paired = jupytext.read(p.with_suffix(".py"))
    assert [(c["cell_type"], "".join(c["source"]).strip()) for c in nb["cells"]] == \
        [(c.cell_type, c.source.strip()) for c in paired.cells], f"run `jupytext --sync {p.with_suffix('.py')}`"
    assert set(papermill.inspect_notebook(str(p))) == params
