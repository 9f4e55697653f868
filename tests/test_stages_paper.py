"""The translate and taskmix stages on paper data: a tiny data root in the official formats (the fixtures of
tests/test_taskmix_paper.py), a tiny NLLB-format translator, and a repository folder whose params.yaml selects
``data.source: paper``. Also the ``taskmix.released`` shortcut (the authors' translated mix, nothing translated)."""
import json
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import build_tiny_nllb, make_paper_root

from mblip import config as C
from mblip import stages
from mblip import taskmix_paper as P

ROOT = Path(__file__).resolve().parents[1]
LANGS = ["en", "de", "fr", "iw"]
SCHEMA = {"id", "image", "lang", "task", "prompt", "target"}
TRUNCATED = "webcapfilt/images/00000004.jpg"  # in the fixture's CapFilt file, image cut short


def make_repo(tmp, **overrides):
    """A repository folder (params.yaml + data/paper) whose config selects the paper data; returns (folder, params)."""
    make_paper_root(tmp / "data")
    params = {"preset": "paper-mt0xl", "seed": 42,
              "languages": {"use": LANGS, "assignment": "temperature", "temperature": 10.0},
              "models": {"translator": "models/nllb"},
              "translate": {"batch_size": 32, "num_beams": 1, "max_new_tokens": 8},
              "taskmix": {"translated": True}}
    for k, v in overrides.items():
        params[k] = {**params.get(k, {}), **v}
    (tmp / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    return tmp, params


def load_cfg(repo, monkeypatch):
    monkeypatch.chdir(repo)  # Config.repo_root: the nearest folder upwards with params.yaml
    cfg = C.load(repo / "params.yaml")
    assert cfg.data.source == "paper" and cfg.repo_root == repo.resolve()
    return cfg


def read_mix(folder):
    rows = []
    for shard in sorted(folder.glob("*.jsonl")):
        rows += [json.loads(line) for line in shard.read_text(encoding="utf-8").splitlines()]
    return rows


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    """translate then taskmix, once, on the fixture sources."""
    import torch

    torch.set_num_threads(1)  # shared 2-core machine
    repo, _ = make_repo(tmp_path_factory.mktemp("repo"))
    build_tiny_nllb(repo / "models/nllb")  # trained to copy: its outputs depend on its input
    with pytest.MonkeyPatch.context() as mp:
        cfg = load_cfg(repo, mp)
        translated = stages.translate(cfg, quality_sample=4)
        mix = stages.taskmix(cfg)
    return repo, translated, mix


def test_paper_mix_has_the_schema_and_the_assignments_counts(paper_run):
    repo, translated, mix = paper_run
    records = read_mix(repo / "artifacts/taskmix/train")
    assert records and len(records) == mix["total"] == len(mix["records"])
    for r in records:
        assert set(r) == SCHEMA and all(isinstance(r[k], str) and r[k] for k in SCHEMA), r
        assert (repo / "data/paper" / r["image"]).is_file()
    # the same sources, languages and seed through taskmix_paper directly: counts per task and language match
    english, _ = P.build_paper_english(repo / "data/paper", P.PAPER_TASKS, languages=LANGS, seed=42, progress=False)
    assigned = P.assign_paper(english, LANGS, "temperature", 10.0, 42, translated=True)
    expect = {t: Counter(l for l in ls if l is not None) for t, ls in assigned.items()}
    got = {t: Counter() for t in expect}
    for r in records:
        got[r["task"]][r["lang"]] += 1
    assert got == expect
    assert set(expect["caption"]) == set(LANGS)  # every language has data, so translation was exercised
    assert mix["counts"] == {t: dict(sorted(c.items())) for t, c in expect.items() if c}
    # every planned string was translated, and the non-English caption targets are those translations
    requests = P.plan_paper_requests(english, assigned)
    table = {(r["text"], r["lang"]): r["translation"]
             for r in read_mix(repo / "artifacts/translate") if "translation" in r}
    assert translated["metrics"]["requests"] == len(requests) == len(table)
    assert len(set(table.values())) > 1  # the copy model's output depends on its input
    source = {r["id"]: r["en"]["caption"] for r in english["caption"]}
    for r in records:
        if r["task"] == "caption" and r["lang"] != "en":
            assert r["target"] == table[(source[r["id"]], r["lang"])]
    assert json.loads((repo / "metrics/taskmix.json").read_text())["per_task_lang"] == mix["counts"]


def test_paper_coverage_counts_the_unreadable_image_and_the_mix_leaves_it_out(paper_run):
    repo, _, mix = paper_run
    coverage = json.loads((repo / "metrics/taskmix_coverage.json").read_text(encoding="utf-8"))
    capfilt = coverage["sources"]["webcapfilt"]
    assert capfilt["images_unreadable"] == 1 and capfilt["images_missing"] == 1
    assert dict(map(tuple, capfilt["bad_images"]))[TRUNCATED].startswith("unreadable")
    assert coverage["images_left_out"]["unreadable"] >= 1
    assert TRUNCATED not in {r["image"] for r in read_mix(repo / "artifacts/taskmix/train")}
    assert "| webcapfilt |" in (repo / "artifacts/taskmix/COVERAGE.md").read_text(encoding="utf-8")
    # no gold translations in paper data: no validation mix, and the summary says so
    metrics = json.loads((repo / "metrics/taskmix.json").read_text(encoding="utf-8"))
    assert metrics["val"] == mix["val"] == 0 and "gold" in metrics["val_note"] and mix["val_note"]
    assert not list((repo / "artifacts/taskmix").glob("val/*.jsonl"))


def test_released_mix_is_converted_and_nothing_is_translated(tmp_path, monkeypatch):
    # no translator folder: loading one would fail, so the stage must not
    repo, _ = make_repo(tmp_path, taskmix={"released": "mblip-train/big_mix.json"},
                        models={"translator": "models/absent"})
    rows = json.loads((repo / "data/paper" / P.PATHS["released"]).read_text(encoding="utf-8"))
    big = rows * (stages.RELEASED_VAL_ROWS // len(rows) + 3)  # more than the authors' 500 validation rows
    (repo / "data/paper/mblip-train/big_mix.json").write_text(json.dumps(big), encoding="utf-8")
    cfg = load_cfg(repo, monkeypatch)

    result = stages.translate(cfg)
    assert (repo / "artifacts/translate/translations.jsonl").read_text() == ""
    assert json.loads((repo / "artifacts/translate/labels.json").read_text()) == {}
    metrics = json.loads((repo / "metrics/translate.json").read_text())
    assert metrics["requests"] == 0 and "skipped" in metrics["note"] and result["rows"] == []
    assert (repo / "plots/translate_quality.csv").read_text().strip() == "lang,metric,value"

    mix = stages.taskmix(cfg)
    train = read_mix(repo / "artifacts/taskmix/train")
    val = read_mix(repo / "artifacts/taskmix/val")
    assert train and all(set(r) == SCHEMA for r in train + val)
    assert all((repo / "data/paper" / r["image"]).is_file() for r in train)  # the missing image is left out
    assert mix["total"] == len(train) and mix["val"] == len(val) and len(train) + len(val) < len(big)
    counts = Counter((r["task"], r["lang"]) for r in train)
    assert {(t, l): n for t, d in mix["counts"].items() for l, n in d.items()} == counts
    written = json.loads((repo / "metrics/taskmix.json").read_text())
    assert written["total"] == len(train) and written["released"]["images_missing"] == 1
    assert {"caption", "vqa", "classify"} <= {r["task"] for r in train}


def test_the_text_only_ceiling_says_it_does_not_apply_to_paper_data(tmp_path, monkeypatch):
    from mblip import ceiling, report

    repo, _ = make_repo(tmp_path)
    cfg = load_cfg(repo, monkeypatch)
    assert ceiling.evaluate(cfg, "xgqa") is None  # nothing loaded: models.llm is a hub id here
    assert json.loads((repo / "metrics/eval/ceiling/xgqa.json").read_text()) == {"status": ceiling.NOT_APPLICABLE}
    assert (repo / "plots/eval/ceiling/xgqa.csv").read_text().splitlines() == ["bench,lang,metric,value,model"]
    assert (repo / "artifacts/eval/ceiling/xgqa").is_dir()  # the stage's declared output exists
    row = report.ceiling_table(repo, cfg).iloc[0]
    assert row["benchmark"] == "xGQA" and row["status"] == ceiling.NOT_APPLICABLE


def test_released_mix_with_demo_data_is_a_config_error(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["taskmix"] = {**(params.get("taskmix") or {}), "released": "mblip-train/task_mix_v2_mt.json"}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(C.ConfigError, match=r"taskmix\.released .*data\.source is 'demo'.*taskmix\.released: ''"):
        C.load(path, overrides={"preset": "demo"})
    assert any(key == "taskmix.released" and text for key, _, text in C.describe())
