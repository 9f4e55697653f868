"""build_world: byte-identical rebuilds, the promised schemas, closed answers, balanced labels."""

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from mblip.demo import annotate
from mblip.demo.build import build_world
from mblip.demo.realise import ALL_ANSWERS, ANSWER_VOCAB, LANGUAGES, NP, Caption, realise
from mblip.demo.world import Scene

ARGS = dict(n_train=24, n_val=8, n_test=12, image_size=48, max_objects=3, seed=7, languages=LANGUAGES)


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    stats = build_world(root, **ARGS)
    return root, stats


def test_two_builds_are_byte_identical(world, tmp_path):
    root, _ = world
    build_world(tmp_path / "again", **ARGS)
    first, second = _digests(root), _digests(tmp_path / "again")
    assert first == second
    assert len(first) > 24 + 8 + 12  # images and more


def test_build_does_not_depend_on_the_process(world, tmp_path):
    # another interpreter with another string-hash salt: set/dict order must not leak into files
    code = ("import sys; from pathlib import Path; from mblip.demo.build import build_world; "
            f"build_world(Path(sys.argv[1]), **{ARGS!r})")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "other")], check=True, env=env, capture_output=True)
    assert _digests(world[0]) == _digests(tmp_path / "other")


def test_rebuild_removes_stale_outputs(tmp_path):
    small = {**ARGS, "n_train": 4, "n_val": 2, "n_test": 2}
    build_world(tmp_path, **{**small, "n_train": 6, "languages": ("en", "de", "fr")})
    (tmp_path / "notes.txt").write_text("mine")
    build_world(tmp_path, **{**small, "languages": ("en", "de")})
    assert not (tmp_path / "images" / "train-000005.png").exists()
    assert not (tmp_path / "eval" / "xgqa" / "fr").exists()
    assert (tmp_path / "notes.txt").read_text() == "mine"  # not ours: untouched


def test_stats_match_the_files(world):
    root, stats = world
    assert stats["scenes"] == {"train": 24, "val": 8, "test": 12}
    assert len(list((root / "images").glob("*.png"))) == stats["files"]["images"] == 44
    for rel, n in stats["files"].items():
        path = root / rel
        if rel.endswith(".jsonl"):
            assert len(_jsonl(path)) == n, rel
        elif rel.endswith(".json"):
            assert len(json.loads(path.read_text(encoding="utf-8"))) == n, rel
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["params"]["seed"] == 7 and manifest["stats"] == json.loads(json.dumps(stats))


def test_scene_graphs_and_splits(world):
    root, _ = world
    scenes = [Scene.from_dict(d) for d in _jsonl(root / "scenes.jsonl")]
    by_split = {split: {s.key() for s in scenes if s.split == split} for split in ("train", "val", "test")}
    assert not (by_split["train"] & by_split["test"]) and not (by_split["train"] & by_split["val"])
    assert all((root / f"images/{s.id}.png").exists() for s in scenes)


def test_train_mix_records_follow_the_schema(world):
    root, stats = world
    for split in ("train", "val", "test"):
        for task in annotate.TRAIN_TASKS:
            rows = _jsonl(root / f"annotations/{split}/{task}.jsonl")
            assert rows, (split, task)
            for r in rows:
                assert r["task"] == task and r["id"].startswith(split)
                assert (root / r["image"]).exists()
                assert set(r["en"]) == set(annotate.TASK_FIELDS[task])
                assert set(r["gold"]) == set(LANGUAGES)
                assert all(set(g) == set(r["en"]) and all(g.values()) for g in r["gold"].values())
                assert r["gold"]["en"] == r["en"]


def test_answers_come_from_closed_vocabularies(world):
    root, _ = world
    for task in ("vqa", "vqg"):
        for r in _jsonl(root / f"annotations/train/{task}.jsonl"):
            assert r["en"]["answer"] in ANSWER_VOCAB[r["meta"]["answer_type"]]
    for lang in LANGUAGES:
        for q in json.loads((root / f"eval/xgqa/{lang}/test.json").read_text(encoding="utf-8")).values():
            assert q["answer"] in ALL_ANSWERS
    for row in json.loads((root / "eval/gqa/train.json").read_text()):
        assert set(row["label"]) <= ALL_ANSWERS and list(row["label"].values()) == [1.0]


def test_labels_are_balanced(world):
    root, _ = world
    for task in ("match", "verify"):
        labels = Counter(r["en"]["label"] for r in _jsonl(root / f"annotations/train/{task}.jsonl"))
        assert labels == {"yes": 12, "no": 12}, task
    nli = Counter(r["gold_label"] for r in _jsonl(root / "eval/xvnli/de/test.jsonl"))
    assert nli == {"entailment": 12, "contradiction": 12, "neutral": 12}
    marvl = Counter(r["label"] for r in _jsonl(root / "eval/marvl/marvl-sw.jsonl"))
    assert marvl == {True: 6, False: 6}
    nlvr2 = Counter(r["label"] for r in _jsonl(root / "eval/nlvr2/train.jsonl"))
    assert nlvr2 == {"True": 12, "False": 12}


def test_match_negatives_change_the_caption(world):
    root, _ = world
    scenes = {d["id"]: Scene.from_dict(d) for d in _jsonl(root / "scenes.jsonl")}
    for r in _jsonl(root / "annotations/train/match.jsonl"):
        scene = scenes[r["id"].rsplit("-", 1)[0]]
        true_caption = realise(Caption(scene.objects, r["meta"]["variant"]), "en")
        assert (r["en"]["caption"] == true_caption) == (r["en"]["label"] == "yes")


def test_classification_labels_name_the_main_object(world):
    root, _ = world
    scenes = {d["id"]: Scene.from_dict(d) for d in _jsonl(root / "scenes.jsonl")}
    rows = _jsonl(root / "annotations/train/classify.jsonl")
    eligible = [s for s in scenes.values() if s.split == "train" and annotate.main_object(s)]
    assert len(rows) == len(eligible) > 0
    for r in rows:
        obj = annotate.main_object(scenes[r["id"].rsplit("-", 1)[0]])
        assert r["gold"]["de"]["label"] == realise(NP(shape=obj.shape, colour=obj.colour, det="bare"), "de")
        assert r["en"]["label"] == f"{obj.colour} {obj.shape}"


def test_eval_sets_are_parallel_across_languages(world):
    root, _ = world
    xgqa = {lang: json.loads((root / f"eval/xgqa/{lang}/test.json").read_text(encoding="utf-8"))
            for lang in LANGUAGES}
    assert all(set(x) == set(xgqa["en"]) for x in xgqa.values())
    for qid, q in xgqa["en"].items():
        assert {xgqa[lang][qid]["answer"] for lang in LANGUAGES} == {q["answer"]}  # answers stay English
        assert len({xgqa[lang][qid]["question"] for lang in LANGUAGES}) == len(LANGUAGES)
        assert q["imageId"].startswith("test-") and set(q["types"]) == {"detailed", "semantic", "structural"}
    xvnli = _jsonl(root / "eval/xvnli/fr/test.jsonl")
    assert set(xvnli[0]) == {"Flikr30kID", "captionID", "gold_label", "pairID", "sentence1", "sentence2"}
    assert all((root / f"images/{r['Flikr30kID']}.png").exists() for r in xvnli)
    assert all("annotator_labels" in r for r in _jsonl(root / "eval/xvnli/en/train.jsonl"))
    marvl = _jsonl(root / "eval/marvl/marvl-zh.jsonl")
    assert {"caption", "left_img", "right_img", "label", "id", "language", "concept"} <= set(marvl[0])
    assert all(r["language"] == "zh" and (root / "images" / r["left_img"]).exists() for r in marvl)
    assert all(r["left_img"] != r["right_img"] for r in marvl)
    captions = _jsonl(root / "eval/xm3600/captions.jsonl")
    assert len(captions) == 12
    for row in captions:
        assert row["image/key"].startswith("test-")
        assert all(len(set(row[lang]["caption"])) == 3 for lang in LANGUAGES)


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown language 'xx'"):
        build_world(tmp_path, **{**ARGS, "languages": ("en", "xx")})
    with pytest.raises(ValueError, match="n_test must be >= 2"):
        build_world(tmp_path, **{**ARGS, "n_test": 1})
