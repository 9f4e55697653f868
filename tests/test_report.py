"""The report stage: tables carry the hand-checked numbers, the paper column stays empty unless a value is recorded,
missing benchmarks are "not run", bad inputs are named, the README changes only between its markers.

The fixture is a small repository tree written here in the formats the stages write (metrics/eval/<model>/<bench>.json
as mblip.realign.evaluate, plots/*_history.csv as mblip.train, predictions.jsonl as mblip.evaluate.run). Every
expected number is worked out by hand next to its assertion.
"""
from __future__ import annotations

import json
import types
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from mblip import report as R


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False), encoding="utf-8")


def _eval(root: Path, model: str, bench: str, metric: str, values: dict, average: dict | None = None) -> None:
    per = {l: {metric: v, "n": 4} for l, v in values.items()}
    _write(root / "metrics/eval" / model / f"{bench}.json", {"per_language": per, "average": average or {}})


def make_tree(root: Path) -> Path:
    # xGQA zero-shot: en 0.5, de 0.25, zh 0.75 -> avg over de, zh = 0.5 (computed: the file has no average)
    _eval(root, "realign", "xgqa", "accuracy", {"en": 0.5, "de": 0.25, "zh": 0.75})
    # xGQA fine-tuned: en 0.6, de 0.4, zh 0.2; the file's own average (0.3) is the one shown
    _eval(root, "finetune-xgqa", "xgqa", "accuracy", {"en": 0.6, "de": 0.4, "zh": 0.2},
          {"mean": {"accuracy": {"mean": 0.3, "languages": ["de", "zh"], "excluded": ["en"]}}})
    # the text-only ceiling (mblip.ceiling) on xGQA: en 0.9, de 0.8, zh 0.6 -> avg 0.7; and question types
    # (detailed) in its file and the zero-shot one: count / relate, n = 2 each in English
    types = {"ceiling": {"en": (1.0, 0.5), "de": (1.0, 0.5), "zh": (0.5, 0.0)},
             "realign": {"en": (0.5, 0.5), "de": (0.5, 0.0), "zh": (1.0, 0.5)}}
    for model, values in (("ceiling", {"en": 0.9, "de": 0.8, "zh": 0.6}),
                          ("realign", {"en": 0.5, "de": 0.25, "zh": 0.75})):
        per = {l: {"accuracy": v, "n": 4, "by_type": {"detailed": {
            "count": {"accuracy": types[model][l][0], "n": 2}, "relate": {"accuracy": types[model][l][1], "n": 2}}}}
            for l, v in values.items()}
        _write(root / "metrics/eval" / model / "xgqa.json", {"per_language": per, "average": {}})
    # the ceiling stage with paper data says why it does not apply
    _write(root / "metrics/eval/ceiling/xvnli.json", {"status": "not applicable: no descriptions"})
    # XVNLI zero-shot only; MaRVL and xFlickrCO not run at all
    _eval(root, "realign", "xvnli", "accuracy", {"en": 1 / 3, "de": 0.5})
    # XM3600 CIDEr: en 0.5, de 0.3, sw 0.1 -> avg (de, sw) = 0.2 -> 20.0
    _eval(root, "realign", "xm3600", "CIDEr", {"en": 0.5, "de": 0.3, "sw": 0.1})
    _write(root / "metrics/standins.json", {
        "mt0": {"qa_em": {"en": 0.9, "de": 0.8, "zh": 0.7}, "nli_acc": {"en": 0.5, "de": 0.4},
                "pair_acc": {"en": 0.7, "de": 0.6}}, "bloomz": {"qa_em": {"en": 0.6, "de": 0.5, "zh": 0.4}},
        "blip2": {"vqa_em": 0.55}, "flan_t5": {"vqa_em": 0.85}})
    _write(root / "metrics/realign.json", {"steps": 6, "final_loss": 2.5, "examples_per_s": 4.0, "wall_s": 10.0})
    _write(root / "plots/realign_history.csv", "step,loss,lr_qformer,lr_lora,examples_per_s\n3,3.0,1e-4,2e-4,4.0\n"
                                               "6,2.5,1e-4,2e-4,4.0\n")
    _write(root / "plots/finetune_xgqa_history.csv", "step,loss,lr_qformer,lr_lora,examples_per_s\n3,1.5,1,1,1\n")
    _write(root / "plots/translate_quality.csv", "lang,metric,value\nde,chrf_roundtrip,61.5\nde,script_ok_pct,100.0\n"
                                                 "zh,chrf_roundtrip,40.0\nzh,script_ok_pct,90.0\n")
    # predictions with images (data/demo/images) for the sample grid and xGQA's majority baseline:
    # references yes, yes, no, 2 -> "yes" is the majority answer, 2/4 = 50.0
    (root / "data/demo/images").mkdir(parents=True)
    lines = []
    for k, ref in enumerate(["yes", "yes", "no", "2"]):
        Image.new("RGB", (8, 8), (40 * k, 100, 200)).save(root / f"data/demo/images/test-{k}.png")
        for lang, pred in (("en", "yes"), ("de", "ja"), ("zh", "是")):
            lines.append(json.dumps({"bench": "xgqa", "id": f"q{k}", "lang": lang, "images": [f"images/test-{k}.png"],
                                     "prompt": f"Question: q{k}? Short answer in English:", "prediction": pred,
                                     "reference": ref, "correct": pred == ref}, ensure_ascii=False))
    _write(root / "artifacts/eval/realign/xgqa/predictions.jsonl", "\n".join(lines) + "\n")
    _write(root / "artifacts/eval/realign/xgqa/metrics.json", {"bench": "xgqa", "layout": "demo"})
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = make_tree(tmp_path_factory.mktemp("repo"))
    return root, R.build(root)


def _row(df: pd.DataFrame, **match) -> pd.Series:
    sel = df
    for k, v in match.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, (match, sel)
    return sel.iloc[0]


def test_iglue_table_has_the_hand_checked_numbers_and_an_empty_paper_column(built):
    root, _ = built
    df = pd.read_csv(root / "results/tables/iglue.csv")
    zs = _row(df, benchmark="xGQA", setting="zero-shot")
    assert (zs["en"], zs["avg"], zs["de"], zs["zh"]) == (50.0, 50.0, 25.0, 75.0)
    assert zs["avg_over"] == "de zh" and zs["status"] == "ok"
    ft = _row(df, benchmark="xGQA", setting="fine-tuned")
    assert (ft["en"], ft["avg"], ft["de"], ft["zh"]) == (60.0, 30.0, 40.0, 20.0)
    xv = _row(df, benchmark="XVNLI", setting="zero-shot")
    assert (xv["en"], xv["avg"]) == (33.3, 50.0)  # 1/3 -> 33.3
    # never guessed: every paper cell is empty
    assert df["paper en"].isna().all() and df["paper avg"].isna().all()
    md = (root / "results/tables/iglue.md").read_text()
    assert "| xGQA | zero-shot | accuracy | 50.0 | 50.0 |  |  |" in md


def test_missing_benchmarks_are_not_run_rows(built):
    root, result = built
    df = pd.read_csv(root / "results/tables/iglue.csv")
    assert _row(df, benchmark="MaRVL", setting="zero-shot")["status"] == R.NOT_RUN
    assert _row(df, benchmark="XVNLI", setting="fine-tuned")["status"] == R.NOT_RUN
    assert _row(df, benchmark="xFlickrCO", setting="zero-shot")["status"] == R.NOT_RUN
    assert _row(df, benchmark="xFlickrCO", setting="fine-tuned")["status"] == R.NO_FINETUNE
    assert pd.isna(_row(df, benchmark="MaRVL", setting="zero-shot")["en"])
    for name in ("maxm", "hallucination"):
        t = pd.read_csv(root / f"results/tables/{name}.csv")
        assert set(t["status"]) == {R.NOT_RUN}
    assert "MaRVL zero-shot: not run in this preset" in result["not_run"]
    summary = (root / "results/summary.md").read_text()
    assert "POPE: not run in this preset" in summary and "CHAIR: not run in this preset" in summary


def test_a_planned_but_missing_evaluation_says_which_stage_to_run(tmp_path):
    root = make_tree(tmp_path)
    cfg = types.SimpleNamespace(eval=types.SimpleNamespace(benchmarks=["xgqa", "marvl"]),
                                finetune=types.SimpleNamespace(tasks=["xgqa"]))
    df = R.iglue_table(root, cfg)
    assert _row(df, benchmark="MaRVL", setting="zero-shot")["status"] == \
        "missing metrics/eval/realign/marvl.json (run `dvc repro evaluate@marvl`)"
    assert _row(df, benchmark="xFlickrCO", setting="zero-shot")["status"] == R.NOT_RUN


def test_xm3600_per_language_cider_x100_with_average(built):
    root, _ = built
    df = pd.read_csv(root / "results/tables/xm3600.csv", keep_default_na=False)
    assert list(df["lang"][:3]) == ["en", "de", "sw"]
    assert list(df["CIDEr"][:3]) == [50.0, 30.0, 10.0]
    avg = df.iloc[3]
    assert avg["lang"].startswith("avg (2 languages") and avg["CIDEr"] == 20.0
    assert (df["paper"] == "").all()


def test_standins_ceiling_beside_the_realigned_model(built):
    _, result = built
    st = result["tables"]["standins"]
    de = _row(st, lang="de")
    assert de["mT0 text-only QA EM (held-out)"] == 80.0 and de["realigned xGQA acc (zero-shot)"] == 25.0
    assert de["text-only xGQA acc (ceiling, same questions)"] == 80.0
    en = _row(st, lang="en")
    assert en["BLIP-2 (English, image) VQA EM"] == 55.0 and pd.isna(de["BLIP-2 (English, image) VQA EM"])


def test_ceiling_table_puts_each_model_below_the_text_only_ceiling(built):
    _, result = built
    ce = result["tables"]["ceiling"]
    top = _row(ce, benchmark="xGQA", model="text-only ceiling")
    assert (top["en"], top["avg"], top["de"]) == (90.0, 70.0, 80.0) and pd.isna(top["below ceiling avg"])
    zs = _row(ce, benchmark="xGQA", model="zero-shot")
    assert (zs["en"], zs["avg"]) == (50.0, 50.0)
    assert (zs["below ceiling en"], zs["below ceiling avg"]) == (40.0, 20.0)  # 90 - 50, 70 - 50
    ft = _row(ce, benchmark="xGQA", model="fine-tuned")
    assert (ft["avg"], ft["below ceiling en"], ft["below ceiling avg"]) == (30.0, 30.0, 40.0)  # the file's avg 0.3
    assert _row(ce, benchmark="XVNLI")["status"] == "not applicable: no descriptions"
    assert _row(ce, benchmark="MaRVL")["status"] == R.NOT_RUN
    assert "The text-only ceiling on the same test questions" in result["summary"].read_text()


def test_xgqa_types_table_averages_each_type_over_the_other_languages(built):
    _, result = built
    ty = result["tables"]["xgqa_types"]
    count = _row(ty, kind="detailed", type="count")
    # ceiling en 1.0, de 1.0 / zh 0.5 -> 75; zero-shot en 0.5, de 0.5 / zh 1.0 -> 75
    assert (count["n (en)"], count["ceiling en"], count["ceiling avg"]) == (2, 100.0, 75.0)
    assert (count["zero-shot en"], count["zero-shot avg"]) == (50.0, 75.0)
    relate = _row(ty, kind="detailed", type="relate")
    assert (relate["ceiling avg"], relate["zero-shot avg"]) == (25.0, 25.0)  # (0.5 + 0) / 2, (0 + 0.5) / 2
    assert not any(c.startswith("fine-tuned") for c in ty.columns)  # its file has no question types
    assert "**xGQA by question type**" in result["summary"].read_text()
    assert result["figures"]["xgqa_types"].stat().st_size > 10_000


def test_statement_ceilings_beside_xvnli_and_marvl(built, tmp_path):
    _, result = built
    sm = result["tables"]["statements"]
    de = _row(sm, lang="de")
    assert de["mT0 text-only XVNLI-style acc (held-out)"] == 40.0 and de["XVNLI zero-shot"] == 50.0
    assert de["mT0 text-only MaRVL-style acc (held-out)"] == 60.0
    assert not any(c.startswith("MaRVL ") for c in sm.columns)  # MaRVL was not evaluated: no empty columns
    assert not any("ceiling" in c for c in sm.columns)  # the fixture's XVNLI ceiling file says "not applicable"
    assert list(sm.columns).index("XVNLI zero-shot") < list(sm.columns).index("mT0 text-only MaRVL-style acc (held-out)")
    # with the ceiling stage's file, its same-question accuracy comes first in the benchmark's columns
    _write(tmp_path / "metrics/standins.json", {"mt0": {"nli_acc": {"en": 0.4}}})
    _write(tmp_path / "metrics/eval/ceiling/xvnli.json", {"per_language": {"en": {"accuracy": 0.8, "n": 3}}})
    cols = list(R.statements_table(tmp_path).columns)
    assert cols[1:3] == ["XVNLI text-only ceiling (same questions)", "mT0 text-only XVNLI-style acc (held-out)"]
    (tmp_path / "metrics/eval/ceiling/xvnli.json").unlink()
    # stand-ins trained without statements: one "not run" row that says why
    _write(tmp_path / "metrics/standins.json", {"mt0": {"qa_em": {"en": 0.9}}})
    (row,) = R.statements_table(tmp_path).to_dict("records")
    assert row["status"].startswith(R.NOT_RUN) and "without statements" in row["status"]


def test_majority_baseline_from_the_references(built):
    root, _ = built
    assert R.majority_baseline(root / "artifacts/eval/realign/xgqa/predictions.jsonl") == ("yes", 0.5)
    assert R.majority_baseline(root / "nothing.jsonl") is None


def test_figures_are_written_and_linked_relative_to_the_readme(built):
    root, result = built
    expected = {"per_language_xgqa", "per_language_xvnli", "xm3600", "standins", "xgqa_types", "learning_curves",
                "translation", "samples"}
    assert set(result["figures"]) == expected  # no MaRVL figure: nothing to plot
    for path in result["figures"].values():
        data = Path(path).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, path
        assert Path(path).parent == root / "results/figures"
    summary = (root / "results/summary.md").read_text()
    assert "](results/figures/sample_predictions.png)" in summary
    assert "](results/tables/iglue.md)" in summary
    assert not result["warnings"]  # every sample image was found


def test_paper_values_fill_only_their_cell_and_need_a_source(tmp_path):
    root = make_tree(tmp_path)
    entry = {"table": "iglue", "row": "xgqa/zero-shot", "column": "avg", "model": "mt0-xl", "value": 12.3,
             "source": "test fixture"}
    df = R.iglue_table(root, paper_values=[entry])
    assert _row(df, benchmark="xGQA", setting="zero-shot")["paper avg"] == 12.3
    assert df["paper avg"].notna().sum() == 1 and df["paper en"].isna().all()
    with pytest.raises(ValueError, match="source"):
        R.build(root, paper_values=[{**entry, "source": ""}])
    assert R.PAPER_VALUES == []  # the paper's tables could not be retrieved: nothing is asserted


def test_a_malformed_metrics_file_is_named(tmp_path):
    root = make_tree(tmp_path)
    bad = root / "metrics/eval/realign/marvl.json"
    _write(bad, "{not json")
    with pytest.raises(R.ReportInputError, match=str(bad)):
        R.build(root)
    _write(bad, {"per_language": {"en": {"accuracy": "high"}}})
    with pytest.raises(R.ReportInputError, match=r"marvl\.json: per_language\.en\.accuracy must be a number"):
        R.iglue_table(root)
    _write(bad, {"scores": {}})
    with pytest.raises(R.ReportInputError, match="per_language"):
        R.iglue_table(root)


def test_a_history_without_a_loss_column_is_named(tmp_path):
    root = make_tree(tmp_path)
    _write(root / "plots/warmup_history.csv", "step,lr\n1,0.1\n")
    with pytest.raises(R.ReportInputError, match=r"warmup_history\.csv: missing column\(s\) \['loss'\]"):
        R.build(root, results_dir=tmp_path / "out")


def test_update_readme_replaces_only_between_markers_and_is_idempotent(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "summary.md").write_text("| a | b |\n|---|---|\n| 1 | 2 |\n")
    readme = tmp_path / "README.md"
    before, after = "# mblip\n\nIntro.\n\n## Results\n", "\n\n## Install\nMore.\n"
    readme.write_text(f"{before}{R.README_START}\nold stale text\n{R.README_END}{after}")
    assert R.update_readme(readme, results) is True
    text = readme.read_text()
    assert text == f"{before}{R.README_START}\n| a | b |\n|---|---|\n| 1 | 2 |\n{R.README_END}{after}"
    assert R.update_readme(readme, results) is False and readme.read_text() == text


@pytest.mark.parametrize("body", ["no markers at all\n", f"{R.README_END}\nx\n{R.README_START}\n",
                                  f"{R.README_START}\n{R.README_START}\n{R.README_END}\n"])
def test_update_readme_needs_its_markers(tmp_path, body):
    (tmp_path / "summary.md").write_text("x\n")
    readme = tmp_path / "README.md"
    readme.write_text(body)
    with pytest.raises(ValueError, match="results:start"):
        R.update_readme(readme, tmp_path)
    assert readme.read_text() == body
