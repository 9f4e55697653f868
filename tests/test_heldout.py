"""The held-out task mix (`mblip.heldout`): scores worked out by hand, the stage's files through `run` with a
generate function of our own, the paper case without a validation mix, bad records named, and the report's table.
(The stage on a trained model runs in test_pipeline_e2e.)"""
from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from mblip import config as C
from mblip import heldout as H
from mblip import report as R

RECORDS = [  # a yes / no task in two languages and a short-answer task
    {"id": "a", "image": "images/a.png", "lang": "en", "task": "verify", "prompt": "Is there a red circle?",
     "target": "Yes, it does."},
    {"id": "b", "image": "images/b.png", "lang": "de", "task": "verify", "prompt": "Gibt es ein Quadrat?",
     "target": "No, it does not."},
    {"id": "c", "image": "images/c.png", "lang": "en", "task": "verify", "prompt": "A blue square?", "target": "Yes"},
    {"id": "d", "image": "images/d.png", "lang": "de", "task": "verify", "prompt": "Ein Kreis?", "target": "No"},
    {"id": "e", "image": "images/e.png", "lang": "en", "task": "vqa", "prompt": "What colour?", "target": "red"},
    {"id": "f", "image": "images/f.png", "lang": "en", "task": "vqa", "prompt": "What shape?", "target": "circle"},
]
PREDS = ["Yes, it does.", "Yes, it does.", "yes", "Nein", "Red.", "a blue square"]


def test_scores_by_hand():
    s = H.score(RECORDS, PREDS)
    v = s["verify"]
    # exact match after VQA cleaning of both sides: "yes it does" = "yes it does"; "yes it does" != "no it does not";
    # "yes" = "yes"; "nein" != "no"
    assert v["n"] == 4 and v["exact_match"] == 0.5
    # POPE's rule: "Nein" holds no "no"/"not" word, so it counts as yes; every answer is yes, half the targets are
    assert (v["yes_no_accuracy"], v["yes_ratio"], v["gold_yes_ratio"]) == (0.5, 1.0, 0.5)
    assert v["per_language"]["en"]["yes_no_accuracy"] == 1.0 and v["per_language"]["de"]["yes_no_accuracy"] == 0.0
    assert v["per_language"]["de"]["exact_match"] == 0.0 and v["per_language"]["en"]["n"] == 2
    q = s["vqa"]
    assert q["exact_match"] == 0.5 and "yes_no_accuracy" not in q
    # token F1: "red" vs "red" = 1; "blue square" (article kept by F1's tokens: "a blue square") vs "circle" = 0
    assert q["token_f1"] == 0.5
    rows = H.rows(s, "realign")
    assert {"model": "realign", "task": "verify", "lang": "all", "metric": "yes_ratio", "value": 1.0} in rows
    assert not [r for r in rows if r["metric"] == "n"]


def test_yes_no_tasks_and_bad_input():
    assert H.is_yes_no(["yes", "No, it is not.", "YES."]) and not H.is_yes_no(["yes", "maybe"])
    assert not H.is_yes_no([]) and not H.is_yes_no(["Nope"])
    with pytest.raises(ValueError, match="5 predictions for 6 records"):
        H.score(RECORDS, PREDS[:5])
    assert [r["id"] for r in H.first_per_language(RECORDS, 1)] == ["a", "b", "e"]


def test_a_malformed_record_is_named_with_its_line(tmp_path):
    (tmp_path / "verify.jsonl").write_text(json.dumps(RECORDS[0]) + "\n" + '{"id": "x", "task": "verify"}\n')
    with pytest.raises(ValueError, match=r"verify\.jsonl:2: not a task-mix record .*'image'"):
        H.read_mix(tmp_path)


def _repo(tmp_path, monkeypatch, records):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"preset": "demo"}), encoding="utf-8")
    val = tmp_path / "artifacts/taskmix/val"
    val.mkdir(parents=True)
    for task in sorted({r["task"] for r in records}):
        (val / f"{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records if r["task"] == task))
    monkeypatch.chdir(tmp_path)  # Config.repo_root: the nearest folder upwards with params.yaml
    return C.load(tmp_path / "params.yaml")


def test_run_writes_predictions_metrics_and_the_report_table(tmp_path, monkeypatch):
    cfg = _repo(tmp_path, monkeypatch, RECORDS)
    answers = {r["prompt"]: p for r, p in zip(RECORDS, PREDS)}
    seen = {}

    def generate(images, prompts, decoding):
        seen.update(images=images, decoding=decoding)
        return [answers[p] for p in prompts]

    m = H.run(cfg, generate=generate)
    assert m["status"] == "ok" and m["per_task"]["verify"]["yes_no_accuracy"] == 0.5
    assert seen["decoding"].max_new_tokens == cfg.realign.max_len and seen["decoding"].num_beams == 5
    assert [str(i[0]) for i in seen["images"]][:2] == ["images/a.png", "images/b.png"]  # task files in name order
    pred = [json.loads(l) for l in (tmp_path / "artifacts/heldout/predictions.jsonl").read_text().splitlines()]
    assert [p["prediction"] for p in pred] == PREDS
    assert json.loads((tmp_path / "metrics/heldout.json").read_text()) == json.loads(json.dumps(m))
    assert "yes_ratio" in (tmp_path / "plots/heldout.csv").read_text()
    t = R.heldout_table(tmp_path).set_index("task")
    # en exact match of verify: both English answers right; avg over the other languages: German only, 0 of 2
    assert (t.loc["verify", "exact match en"], t.loc["verify", "exact match avg"]) == (100.0, 0.0)
    assert (t.loc["verify", "answers yes"], t.loc["verify", "yes/no accuracy"]) == (100.0, 50.0)
    assert pd.isna(t.loc["vqa", "exact match avg"])  # English only: no other language to average


def test_no_validation_mix_is_recorded_not_scored(tmp_path, monkeypatch):
    cfg = _repo(tmp_path, monkeypatch, [])

    def generate(*_):
        raise AssertionError("nothing to answer")

    m = H.run(cfg, generate=generate)
    assert m["status"] == H.NO_VAL_MIX
    assert (tmp_path / "plots/heldout.csv").read_text().strip() == "model,task,lang,metric,value"
    t = R.heldout_table(tmp_path)
    assert t["status"].tolist() == [H.NO_VAL_MIX]
    assert R.heldout_table(tmp_path / "nowhere")["status"].iloc[0].startswith("not run")
