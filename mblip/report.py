"""Tables and figures. Grows with the pipeline: every table and figure of the paper is regenerated here."""
from __future__ import annotations

import json
import logging
import textwrap
from importlib import resources
from pathlib import Path
from typing import Sequence

# Scripts our captions use and fonts that cover them, in the order matplotlib should try them.
_FONT_FALLBACK = ["DejaVu Sans", "Noto Sans", "Noto Sans CJK TC", "Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans Arabic",
                  "Noto Naskh Arabic", "WenQuanYi Zen Hei", "Droid Sans Fallback"]


def fetch_counts(summary: dict) -> dict:
    """Flatten fetch's stats into {name: count} for a DVC metric."""
    stats = summary.get("stats") or {}
    out = {}

    def walk(prefix, v):
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), x)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[prefix] = v
    walk("", stats)
    return out


def as_frame(counts: dict):
    import pandas as pd
    return pd.DataFrame(sorted(counts.items()), columns=["what", "count"]).set_index("what")


def _fonts():
    """Font list for multi-script captions (the pinned Noto CJK wheel is registered with matplotlib)."""
    from matplotlib import font_manager
    try:
        otf = resources.files("cvttf_NotoSansCJK_Regular").joinpath("NotoSansCJKtc-Regular.otf")
        font_manager.fontManager.addfont(str(otf))
    except (ModuleNotFoundError, FileNotFoundError):
        pass
    have = {f.name for f in font_manager.fontManager.ttflist}
    fonts = [f for f in _FONT_FALLBACK if f in have] or ["DejaVu Sans"]
    if not any("CJK" in f or "Hei" in f or "Fallback" in f for f in fonts):
        logging.getLogger("mblip").warning(
            "no CJK font found: Chinese/Japanese captions in figures show as boxes "
            "(Debian/Ubuntu: apt install fonts-noto-cjk)")
    return fonts


def display_text(text: str) -> str:
    """Text as matplotlib should draw it: Arabic letters in their joined forms. (matplotlib orders
    right-to-left runs itself but does not join letters)"""
    if any("\u0600" <= ch <= "\u06ff" for ch in text):
        import arabic_reshaper
        return arabic_reshaper.reshape(text)
    return text


def sample_grid(captions_jsonl: Path, image_dir: Path, langs: Sequence[str] | None, n: int = 6):
    """Images with one reference caption per language, from a captions file in XM3600's format
    (``{"image/key": id, "<lang>": {"caption": [...]}}``) — the demo world's and the real benchmark's."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    rows = [json.loads(l) for l in Path(captions_jsonl).read_text(encoding="utf-8").splitlines()[:n]]
    if not rows:
        raise ValueError(f"{captions_jsonl}: no captions to show")
    langs = [l for l in (langs or []) if l in rows[0]] or [k for k in rows[0] if k != "image/key"]
    fonts = _fonts()
    fig, axes = plt.subplots(1, len(rows), figsize=(2.6 * len(rows), 1.2 + 0.42 * len(langs)), squeeze=False)
    for ax, row in zip(axes[0], rows):
        key = row["image/key"]
        path = next((p for p in (image_dir / f"{key}.png", image_dir / f"{key}.jpg") if p.exists()), None)
        if path is None:
            raise FileNotFoundError(f"image of {key} not found in {image_dir} (expected {key}.png or .jpg)")
        ax.imshow(Image.open(path).convert("RGB"))
        ax.set_xticks([]), ax.set_yticks([])
        text = "\n".join(f"{l}: " + display_text(textwrap.shorten(row[l]["caption"][0], 44)) for l in langs)
        ax.set_xlabel(text, fontsize=6.5, loc="left", fontfamily=fonts, linespacing=1.25)
        ax.set_title(key, fontsize=7)
    fig.tight_layout()
    return fig


# =====================================================================================================================
# The report stage: results/ from metrics/, plots/ and artifacts/
# =====================================================================================================================
#
# build() reads what the earlier stages wrote -- never a model:
#   metrics/eval/<model>/<bench>.json    per-language scores (model = realign | finetune-<task>)
#   metrics/{standins,warmup,realign,finetune_<task>}.json
#   plots/{warmup,realign,finetune_<task>}_history.csv, plots/translate_quality.csv
#   artifacts/eval/<model>/<bench>/predictions.jsonl (+ the test images they name, under data/)
# and writes results/tables/<name>.{csv,md}, results/figures/<name>.png and results/summary.md (what the README
# shows between its results markers, see update_readme). Scores are printed x100, as the paper prints them.

PAPER_VALUES: list[dict] = []
"""The paper's reported numbers, one entry per cell; the "paper" columns are filled from here and only from here.

Entry: ``{"table", "row", "column", "model", "value", "source"}``, e.g. ``{"table": "iglue", "row": "xgqa/zero-shot",
"column": "avg", "model": "mt0-xl", "value": <as printed, x100>, "source": "arXiv 2307.06930v3, Table <n>"}``.
Keys per table in :data:`PAPER_TABLES`; ``model`` is one of :data:`PAPER_MODELS`. Empty on purpose: the paper's
result tables could not be retrieved (shared/reference/mblip-protocol.md), and a guessed number is worse than an
empty cell. Add a value only together with the page/table it was read from."""

PAPER_TABLES = {
    "iglue": "row '<bench>/<setting>' (bench xgqa|xvnli|marvl|xflickrco, setting zero-shot|fine-tuned); "
             "column 'en', 'avg' or a language code",
    "xm3600": "row: a language code, 'avg' or 'avg_without_quz'; column 'CIDEr'",
    "maxm": "row: a language code or 'avg'; column 'accuracy'",
    "hallucination": "row 'pope/<random|popular|adversarial>' or 'chair/<short|long>'; column: the metric "
                     "(accuracy, f1, CHAIR_s, CHAIR_i)",
}
PAPER_MODELS = ("mt0-xl", "bloomz-7b1")

IGLUE = ("xgqa", "xvnli", "marvl", "xflickrco")
FINETUNED = ("xgqa", "xvnli", "marvl")  # protocol §8.4: the tasks the paper fine-tunes on (English data)

# Benchmark -> how the report shows it: title, headline metric, chance line of the per-language bars
# ("majority" = the most frequent reference answer, computed from the predictions file).
VIEWS = {
    "xgqa": {"title": "xGQA", "metric": "accuracy", "chance": "majority"},
    "xvnli": {"title": "XVNLI", "metric": "accuracy", "chance": 1 / 3, "chance_label": "chance, 3 classes"},
    "marvl": {"title": "MaRVL", "metric": "accuracy", "chance": 1 / 2, "chance_label": "chance, yes/no"},
    "xflickrco": {"title": "xFlickrCO", "metric": "CIDEr"},
    "xm3600": {"title": "XM3600", "metric": "CIDEr"},
    "maxm": {"title": "MaXM", "metric": "accuracy"},
    "pope": {"title": "POPE", "metrics": ("accuracy", "f1")},
    "chair": {"title": "CHAIR", "metrics": ("CHAIR_s", "CHAIR_i")},
}
SCALE = 100  # accuracies, CIDEr and CHAIR rates are stored raw and printed x100

NOT_RUN = "not run in this preset"
NO_FINETUNE = "not fine-tuned (protocol §8.4 fine-tunes xGQA, XVNLI, MaRVL)"

TRANSLATE_METRICS = {  # plots/translate_quality.csv metric -> axis label
    "chrf_vs_gold": "chrF vs human reference",
    "chrf_roundtrip": "round-trip chrF (en→x→en)",
    "script_ok_pct": "outputs in the right script (%)",
    "vqa_labels_kept_pct": "VQA answer labels translated (%)",
}
# Languages shown in the sample grid when present: English first, then as many scripts as possible.
SAMPLE_LANGS = ("en", "de", "zh", "ar", "ru", "ja", "hi", "sw", "fr", "es", "id", "ko", "th")

README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


class ReportInputError(ValueError):
    """A metrics/plots/artifacts file the report reads is malformed; the message names the file and the fix."""


# --------------------------------------------------------------------------------------------- paper values
def check_paper_values(values: Sequence[dict]) -> None:
    """Every entry names its table, row, column, model, a number and where it was read."""
    for i, v in enumerate(values):
        where = f"PAPER_VALUES[{i}] ({v!r})"
        missing = [k for k in ("table", "row", "column", "model", "value", "source") if k not in v]
        if missing:
            raise ValueError(f"{where}: missing key(s) {missing}")
        if v["table"] not in PAPER_TABLES:
            raise ValueError(f"{where}: unknown table {v['table']!r}; known: {sorted(PAPER_TABLES)}")
        if v["model"] not in PAPER_MODELS:
            raise ValueError(f"{where}: unknown model {v['model']!r}; known: {list(PAPER_MODELS)}")
        if not isinstance(v["value"], (int, float)) or isinstance(v["value"], bool):
            raise ValueError(f"{where}: value must be a number as the paper prints it (x100)")
        if not str(v["source"]).strip():
            raise ValueError(f"{where}: give the source (paper version, table/page) of every value")


def paper_value(table: str, row: str, column: str, model: str, values: Sequence[dict] | None = None):
    """The reported value of one cell, or None where it is not recorded."""
    for v in PAPER_VALUES if values is None else values:
        if (v["table"], v["row"], v["column"], v["model"]) == (table, row, column, model):
            return float(v["value"])
    return None


# --------------------------------------------------------------------------------------------- reading inputs
def _read_json(path: Path):
    """Parsed JSON, or None when the file is missing; a malformed file stops the report, naming it."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportInputError(f"{path}: not valid JSON ({e}); rerun the stage that writes it") from e


def _read_csv(path: Path, columns: Sequence[str]):
    import pandas as pd
    if not path.exists():
        return None
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ReportInputError(f"{path}: not a readable CSV ({e}); rerun the stage that writes it") from e
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ReportInputError(f"{path}: missing column(s) {missing}; expected at least {list(columns)}, "
                               f"found {list(df.columns)}")
    return df


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def read_eval(root: Path, model: str, bench: str) -> dict | None:
    """``metrics/eval/<model>/<bench>.json`` as ``{"per_language": {lang: {metric: value}}, "average": ...}``,
    None when that evaluation was not run."""
    path = Path(root) / "metrics/eval" / model / f"{bench}.json"
    d = _read_json(path)
    if d is None or (isinstance(d, dict) and "status" in d and "per_language" not in d):
        return None  # not run, or a stage that records why it does not apply (the ceiling with paper data)
    per = d.get("per_language") if isinstance(d, dict) else None
    if not isinstance(per, dict) or not per or not all(isinstance(m, dict) for m in per.values()):
        raise ReportInputError(f"{path}: expected {{'per_language': {{lang: {{metric: value}}}}, 'average': ...}} "
                               "as mblip.realign.evaluate writes it; rerun that evaluation")
    return {"per_language": per, "average": d.get("average") or {}, "path": path}


def _metric(run: dict, bench: str, metric: str) -> dict[str, float]:
    """Per-language values of one metric; a language without it is an error naming the file."""
    out = {}
    for lang, m in run["per_language"].items():
        if not _is_num(m.get(metric)):
            raise ReportInputError(f"{run['path']}: per_language.{lang}.{metric} must be a number, "
                                   f"got {m.get(metric)!r} ({bench})")
        out[lang] = float(m[metric])
    return out


def _lang_order(langs) -> list[str]:
    return sorted(langs, key=lambda l: (l != "en", l))


def _average(run: dict, metric: str, values: dict[str, float], name: str = "mean",
             exclude: Sequence[str] = ("en",)) -> tuple[float | None, list[str]]:
    """The file's average if it has one (``average.<name>.<metric>``), else the mean over the languages not in
    ``exclude``; returns (value, languages averaged)."""
    avg = (run["average"].get(name) or {}).get(metric) if isinstance(run["average"], dict) else None
    if isinstance(avg, dict) and _is_num(avg.get("mean")):
        return float(avg["mean"]), list(avg.get("languages") or [])
    kept = sorted(l for l in values if l not in exclude)
    return (sum(values[l] for l in kept) / len(kept) if kept else None), kept


def _r(v, digits: int = 1):
    return None if v is None else round(SCALE * v, digits)


# --------------------------------------------------------------------------------------------- tables
def _status_missing(cfg, model: str, bench: str) -> str:
    """Why an evaluation has no metrics file: not part of this preset, or expected but not produced yet."""
    if cfg is None:
        return NOT_RUN
    if model == "realign":
        planned, stage = bench in cfg.eval.benchmarks, f"evaluate@{bench}"
    else:
        planned, stage = bench in cfg.finetune.tasks, f"finetune@{bench}"
    return f"missing metrics/eval/{model}/{bench}.json (run `dvc repro {stage}`)" if planned else NOT_RUN


def iglue_table(root: Path, cfg=None, paper_model: str = "mt0-xl", paper_values=None):
    """IGLUE, zero-shot (the re-aligned model) and fine-tuned (``finetune-<task>`` on its own task): one row per
    benchmark x setting; columns en, avg (mean over the non-English languages, listed in ``avg_over``), the paper's
    en/avg where recorded, then every language. Scores x100."""
    import pandas as pd
    rows, langs = [], set()
    for bench in IGLUE:
        view = VIEWS[bench]
        for setting, model in (("zero-shot", "realign"), ("fine-tuned", f"finetune-{bench}")):
            row = {"benchmark": view["title"], "setting": setting, "metric": view["metric"], "model": model}
            key = f"{bench}/{setting}"
            row["paper en"] = paper_value("iglue", key, "en", paper_model, paper_values)
            row["paper avg"] = paper_value("iglue", key, "avg", paper_model, paper_values)
            run = read_eval(root, model, bench)
            if run is None:
                if setting == "fine-tuned" and bench not in FINETUNED:
                    row.update(model="", status=NO_FINETUNE)
                else:
                    row["status"] = _status_missing(cfg, model, bench)
                rows.append(row)
                continue
            values = _metric(run, bench, view["metric"])
            avg, over = _average(run, view["metric"], values)
            row.update({"en": _r(values.get("en")), "avg": _r(avg), "avg_over": " ".join(over), "status": "ok"})
            row.update({l: _r(v) for l, v in values.items()})
            langs |= set(values)
            rows.append(row)
    cols = ["benchmark", "setting", "metric", "en", "avg", "paper en", "paper avg", "avg_over", "status", "model"]
    cols += [l for l in _lang_order(langs) if l != "en"]
    return pd.DataFrame(rows).reindex(columns=cols)


def per_language_table(root: Path, bench: str, cfg=None, paper_model: str = "mt0-xl", paper_values=None):
    """One zero-shot benchmark per language (XM3600 CIDEr, MaXM accuracy) with averages and the paper column."""
    import pandas as pd
    metric = VIEWS[bench]["metric"]
    run = read_eval(root, "realign", bench)
    if run is None:
        return pd.DataFrame([{"lang": "", metric: None, "paper": None, "n": None,
                              "status": _status_missing(cfg, "realign", bench)}])
    values = _metric(run, bench, metric)
    rows = [{"lang": l, metric: _r(values[l]), "paper": paper_value(bench, l, metric, paper_model, paper_values),
             "n": run["per_language"][l].get("n"), "status": "ok"} for l in _lang_order(values)]
    averages = [("mean", ("en",), "avg")]
    if bench == "xm3600" and "quz" in values:
        averages.append(("mean_without_quz", ("en", "quz"), "avg_without_quz"))
    for name, exclude, label in averages:
        avg, over = _average(run, metric, values, name, exclude)
        rows.append({"lang": f"{label} ({len(over)} languages, without {'/'.join(exclude)})", metric: _r(avg),
                     "paper": paper_value(bench, label, metric, paper_model, paper_values), "n": None,
                     "status": "ok"})
    df = pd.DataFrame(rows)
    df["n"] = df["n"].astype("Int64")
    return df


def hallucination_table(root: Path, cfg=None, paper_model: str = "mt0-xl", paper_values=None):
    """POPE (accuracy, F1 per negative-sampling setting) and CHAIR (CHAIR_s, CHAIR_i per prompt), x100."""
    import pandas as pd
    rows = []
    for bench in ("pope", "chair"):
        run = read_eval(root, "realign", bench)
        if run is None:
            rows.append({"benchmark": VIEWS[bench]["title"], "setting": "", "metric": "", "value": None,
                         "paper": None, "status": _status_missing(cfg, "realign", bench)})
            continue
        for metric in VIEWS[bench]["metrics"]:
            for setting, v in _metric(run, bench, metric).items():
                rows.append({"benchmark": VIEWS[bench]["title"], "setting": setting, "metric": metric,
                             "value": _r(v), "status": "ok",
                             "paper": paper_value("hallucination", f"{bench}/{setting}", metric, paper_model,
                                                  paper_values)})
    return pd.DataFrame(rows, columns=["benchmark", "setting", "metric", "value", "paper", "status"])


def standins_table(root: Path):
    """The demo's stand-ins beside the re-aligned model. mT0/BLOOMZ answer xGQA-style questions from the *textual*
    scene description, so their exact match is the ceiling for a model that must read the scene from pixels through
    the Q-Former: on the xGQA analogue's own test questions (``metrics/eval/ceiling/xgqa.json``, `mblip.ceiling`,
    the LLM that was re-aligned) and, from the standins stage, on held-out stand-in scenes."""
    import pandas as pd
    path = Path(root) / "metrics/standins.json"
    d = _read_json(path)
    zs, ft = read_eval(root, "realign", "xgqa"), read_eval(root, "finetune-xgqa", "xgqa")
    if not isinstance(d, dict) or not any(isinstance((d.get(k) or {}).get("qa_em"), dict) for k in ("mt0", "bloomz")):
        return pd.DataFrame([{"lang": "", "status": f"{NOT_RUN} (the demo trains stand-ins; "
                                                    "paper presets use released checkpoints)"}])
    cols = {"mT0 text-only QA EM (held-out)": ("mt0", "qa_em"),
            "BLOOMZ text-only QA EM (held-out)": ("bloomz", "qa_em")}
    per = {}
    ceiling = read_eval(root, "ceiling", "xgqa")
    if ceiling is not None:
        per["text-only xGQA acc (ceiling, same questions)"] = _metric(ceiling, "xgqa", "accuracy")
    for name, (part, key) in cols.items():
        v = (d.get(part) or {}).get(key)
        if v is None:
            continue
        if not isinstance(v, dict) or not all(_is_num(x) for x in v.values()):
            raise ReportInputError(f"{path}: {part}.{key} must map language -> number, got {v!r}")
        per[name] = v
    if zs is not None:
        per["realigned xGQA acc (zero-shot)"] = _metric(zs, "xgqa", "accuracy")
    if ft is not None:
        per["fine-tuned xGQA acc"] = _metric(ft, "xgqa", "accuracy")
    english = {"BLIP-2 (English, image) VQA EM": ("blip2", "vqa_em"),
               "Flan-T5 text-only VQA EM": ("flan_t5", "vqa_em")}
    langs = _lang_order({l for v in per.values() for l in v})
    rows = []
    for l in langs:
        row = {"lang": l, **{name: _r(v.get(l)) for name, v in per.items()}}
        for name, (part, key) in english.items():
            v = (d.get(part) or {}).get(key)
            row[name] = _r(v) if l == "en" and _is_num(v) else None
        rows.append({**row, "status": "ok"})
    return pd.DataFrame(rows)


CEILING_BENCHES = ("xgqa", "xvnli", "marvl", "xm3600")  # the demo benchmarks the ceiling stage can score


def _ceiling_missing(root: Path, cfg, bench: str) -> str:
    d = _read_json(Path(root) / "metrics/eval/ceiling" / f"{bench}.json")
    if isinstance(d, dict) and isinstance(d.get("status"), str):
        return d["status"]
    if cfg is not None and bench in cfg.eval.benchmarks:
        return f"missing metrics/eval/ceiling/{bench}.json (run `dvc repro ceiling@{bench}`)"
    return NOT_RUN


def ceiling_table(root: Path, cfg=None):
    """The text-only ceiling (`mblip.ceiling`: the re-aligned LLM reading each test scene's description instead of
    the image) beside the zero-shot and fine-tuned models, on the same test questions with the same prompts,
    decoding and metric: per benchmark, en, avg, how far each model is below the ceiling, then every language. x100."""
    import pandas as pd
    rows, langs = [], set()
    for bench in CEILING_BENCHES:
        view = VIEWS[bench]
        metric = view["metric"]
        ceiling = read_eval(root, "ceiling", bench)
        if ceiling is None:
            rows.append({"benchmark": view["title"], "model": "text-only ceiling", "metric": metric,
                         "status": _ceiling_missing(root, cfg, bench)})
            continue
        top = _metric(ceiling, bench, metric)
        top_avg, _ = _average(ceiling, metric, top)
        models = [("text-only ceiling", "ceiling"), ("zero-shot", "realign")]
        models += [("fine-tuned", f"finetune-{bench}")] if bench in FINETUNED else []
        for label, model in models:
            run = ceiling if model == "ceiling" else read_eval(root, model, bench)
            if run is None:
                rows.append({"benchmark": view["title"], "model": label, "metric": metric,
                             "status": _status_missing(cfg, model, bench)})
                continue
            values = _metric(run, bench, metric)
            avg, over = _average(run, metric, values)
            below = model != "ceiling"
            gap_en = top["en"] - values["en"] if below and "en" in top and "en" in values else None
            gap_avg = top_avg - avg if below and None not in (top_avg, avg) else None
            rows.append({"benchmark": view["title"], "model": label, "metric": metric, "en": _r(values.get("en")),
                         "avg": _r(avg), "below ceiling en": _r(gap_en), "below ceiling avg": _r(gap_avg),
                         "avg_over": " ".join(over), "status": "ok", **{l: _r(v) for l, v in values.items()}})
            langs |= set(values)
    cols = ["benchmark", "model", "metric", "en", "avg", "below ceiling en", "below ceiling avg", "avg_over", "status"]
    return pd.DataFrame(rows).reindex(columns=cols + [l for l in _lang_order(langs) if l != "en"])


MAX_DETAILED_TYPES = 40  # the real GQA has ~100 detailed types: the table keeps to structural / semantic there


def xgqa_types_table(root: Path):
    """xGQA accuracy per GQA question type (``by_type`` in the metrics files, `mblip.evaluate.accuracy_by_type`) for
    the text-only ceiling, the zero-shot and the fine-tuned model: en and the mean over the other languages. x100."""
    import pandas as pd
    runs = {label: read_eval(root, model, "xgqa") for label, model in
            (("ceiling", "ceiling"), ("zero-shot", "realign"), ("fine-tuned", "finetune-xgqa"))}
    runs = {k: v for k, v in runs.items() if v is not None}
    by: dict[tuple[str, str], dict] = {}  # (kind, type) -> {column: value}
    typed = []  # the models whose metrics have question types, in table order
    for label, run in runs.items():
        per: dict[tuple[str, str], dict[str, float]] = {}
        for lang, m in run["per_language"].items():
            bt = m.get("by_type")
            if bt is None:
                continue
            if not isinstance(bt, dict) or not all(isinstance(t, dict) for t in bt.values()):
                raise ReportInputError(f"{run['path']}: per_language.{lang}.by_type must map kind -> type -> "
                                       f"{{accuracy, n}}; rerun that evaluation")
            for kind, types in bt.items():
                if kind == "detailed" and len(types) > MAX_DETAILED_TYPES:
                    continue
                for t, v in types.items():
                    per.setdefault((kind, t), {})[lang] = float(v["accuracy"])
                    if lang == "en":
                        by.setdefault((kind, t), {})["n (en)"] = int(v["n"])
        if per:
            typed.append(label)
        for key, values in per.items():
            others = [v for l, v in values.items() if l != "en"]
            by.setdefault(key, {})[f"{label} en"] = _r(values.get("en"))
            by[key][f"{label} avg"] = _r(sum(others) / len(others)) if others else None
    if not by:
        return pd.DataFrame([{"kind": "", "type": "", "status": "not run (no xGQA metrics with question types)"}])
    order = {"structural": 0, "semantic": 1, "detailed": 2}
    cols = ["kind", "type", "n (en)"] + [f"{label} {c}" for label in typed for c in ("en", "avg")] + ["status"]
    rows = [{"kind": k, "type": t, **v, "status": "ok"}
            for (k, t), v in sorted(by.items(), key=lambda kv: (order.get(kv[0][0], 3), kv[0][1]))]
    df = pd.DataFrame(rows).reindex(columns=cols)
    df["n (en)"] = df["n (en)"].astype("Int64")
    return df


def statements_table(root: Path):
    """XVNLI and MaRVL beside the text-only accuracy on such statements: the ceiling stage's on the benchmark's own
    test statements (``metrics/eval/ceiling/``), and the stand-in LMs' on held-out scenes (`nli_acc`, `pair_acc` in
    metrics/standins.json). "not run" when neither exists (stand-ins without statements, or hub models)."""
    import pandas as pd
    path = Path(root) / "metrics/standins.json"
    d = _read_json(path)
    per: dict[str, dict] = {}
    for part, label in (("mt0", "mT0"), ("bloomz", "BLOOMZ")):
        for key, bench in (("nli_acc", "XVNLI"), ("pair_acc", "MaRVL")):
            v = ((d or {}).get(part) or {}).get(key) if isinstance(d, dict) else None
            if v is None:
                continue
            if not isinstance(v, dict) or not all(_is_num(x) for x in v.values()):
                raise ReportInputError(f"{path}: {part}.{key} must map language -> number, got {v!r}")
            per[f"{label} text-only {bench}-style acc (held-out)"] = v
    for bench, name in (("xvnli", "XVNLI"), ("marvl", "MaRVL")):
        run = read_eval(root, "ceiling", bench)
        if run is not None:
            per[f"{name} text-only ceiling (same questions)"] = _metric(run, bench, "accuracy")
    if not per:
        return pd.DataFrame([{"lang": "", "status": f"{NOT_RUN} (stand-ins without statements in their data)"}])
    for bench, name in (("xvnli", "XVNLI"), ("marvl", "MaRVL")):
        for setting, model in (("zero-shot", "realign"), ("fine-tuned", f"finetune-{bench}")):
            run = read_eval(root, model, bench)
            if run is not None:
                per[f"{name} {setting}"] = _metric(run, bench, "accuracy")
    cols = sorted(per, key=lambda c: ("MaRVL" in c, "ceiling" not in c, "text-only" not in c, "fine-tuned" in c, c))
    langs = _lang_order({l for v in per.values() for l in v})
    return pd.DataFrame([{"lang": l, **{c: _r(per[c].get(l)) for c in cols}, "status": "ok"} for l in langs])


def heldout_table(root: Path):
    """The re-aligned model on its own tasks, on held-out scenes (``metrics/heldout.json``, the `heldout` stage):
    per task, exact match in English and averaged over the other languages, token F1, and for the yes / no tasks the
    decision's accuracy and the shares of "yes" answers and targets. x100."""
    import pandas as pd
    path = Path(root) / "metrics/heldout.json"
    d = _read_json(path)
    if d is None:
        return pd.DataFrame([{"task": "", "status": "not run: no metrics/heldout.json (`dvc repro heldout`)"}])
    if not isinstance(d, dict) or d.get("status") != "ok":
        return pd.DataFrame([{"task": "", "status": str((d or {}).get("status", "not run"))}])
    rows = []
    for task, s in (d.get("per_task") or {}).items():
        per = s.get("per_language") if isinstance(s, dict) else None
        if not isinstance(per, dict) or not all(_is_num(m.get("exact_match")) for m in per.values()):
            raise ReportInputError(f"{path}: per_task.{task} needs per_language.<lang>.exact_match numbers, as "
                                   "mblip.heldout.run writes them; rerun `dvc repro heldout`")
        other = [m["exact_match"] for l, m in per.items() if l != "en"]
        rows.append({"task": task, "n": s.get("n"), "exact match en": _r(per.get("en", {}).get("exact_match")),
                     "exact match avg": _r(sum(other) / len(other)) if other else None,
                     "token F1": _r(s.get("token_f1")), "yes/no accuracy": _r(s.get("yes_no_accuracy")),
                     "answers yes": _r(s.get("yes_ratio")), "targets yes": _r(s.get("gold_yes_ratio")),
                     "status": "ok"})
    return pd.DataFrame(rows)


def training_table(root: Path, cfg=None):
    """Each training stage's end state: steps, final loss, throughput (from metrics/<stage>.json)."""
    import pandas as pd
    tasks = list(cfg.finetune.tasks) if cfg is not None else sorted(
        p.stem.removeprefix("finetune_") for p in (Path(root) / "metrics").glob("finetune_*.json"))
    rows = []
    for stage in ["warmup", "realign"] + [f"finetune_{t}" for t in tasks]:
        path = Path(root) / "metrics" / f"{stage}.json"
        d = _read_json(path)
        if d is None:
            rows.append({"stage": stage, "status": "not run"})
            continue
        if not isinstance(d, dict) or not _is_num(d.get("final_loss")):
            raise ReportInputError(f"{path}: expected a 'final_loss' number (as mblip.train writes it)")
        rows.append({"stage": stage, "steps": d.get("steps"), "final loss": round(d["final_loss"], 4),
                     "examples/s": round(d["examples_per_s"], 2) if _is_num(d.get("examples_per_s")) else None,
                     "wall s": d.get("wall_s"), "status": "ok"})
    return pd.DataFrame(rows, columns=["stage", "steps", "final loss", "examples/s", "wall s", "status"])


def translation_table(root: Path):
    """Translation quality per language (plots/translate_quality.csv), one column per measure."""
    import pandas as pd
    path = Path(root) / "plots/translate_quality.csv"
    df = _read_csv(path, ["lang", "metric", "value"])
    if df is None or df.empty:
        return pd.DataFrame([{"lang": "", "status": "not run"}])
    wide = df.pivot_table(index="lang", columns="metric", values="value", aggfunc="first")
    wide = wide.reindex(columns=[m for m in TRANSLATE_METRICS if m in wide.columns]
                        + [m for m in wide.columns if m not in TRANSLATE_METRICS])
    wide = wide.round(2).reset_index()
    wide.columns.name = None
    wide["status"] = "ok"
    return wide


def resources_table(root: Path):
    """Wall time, CPU time and peak memory of every measured stage run (metrics/resources/<notebook>.json, written by
    `mblip.measure` around each notebook stage), in pipeline order, with the total."""
    import pandas as pd
    cols = ["stage", "wall s", "CPU s", "peak RSS MiB", "status"]
    files = sorted((Path(root) / "metrics/resources").glob("*.json"))
    rows = []
    for path in files:
        d = _read_json(path)
        if not isinstance(d, dict) or not all(_is_num(d.get(k)) for k in ("wall_s", "cpu_s", "peak_rss_mb")):
            raise ReportInputError(f"{path}: expected wall_s, cpu_s and peak_rss_mb numbers (as mblip.measure writes)")
        rows.append({"stage": path.stem, "wall s": d["wall_s"], "CPU s": d["cpu_s"], "peak RSS MiB": d["peak_rss_mb"],
                     "status": "ok" if d.get("exit_code", 0) == 0 else f"failed (exit {d['exit_code']})"})
    if not rows:
        return pd.DataFrame([{"stage": "", "status": "not run"}], columns=cols)
    rows.append({"stage": "total", "wall s": round(sum(r["wall s"] for r in rows), 1),
                 "CPU s": round(sum(r["CPU s"] for r in rows), 1),
                 "peak RSS MiB": max(r["peak RSS MiB"] for r in rows), "status": "ok"})
    return pd.DataFrame(rows, columns=cols)


def ablation_table(root: Path, cfg=None):
    """One row per ablation variant (metrics/ablations/<variant>.json): xGQA-analogue accuracy ×100 (all languages,
    non-English, English), the change against the `base` variant, final training loss and time."""
    import pandas as pd
    from mblip.ablations import VARIANTS
    names = list(cfg.ablations.variants) if cfg is not None else [
        v for v in VARIANTS if (Path(root) / f"metrics/ablations/{v}.json").exists()]
    cols = ["variant", "what changes", "xGQA avg", "Δ avg vs base", "xGQA non-en", "Δ non-en vs base", "xGQA en",
            "steps", "final loss", "wall s", "status"]
    rows, base = [], None
    for name in names:
        path = Path(root) / f"metrics/ablations/{name}.json"
        d = _read_json(path)
        if d is None:
            rows.append({"variant": name, "what changes": VARIANTS.get(name, ("", ""))[1], "status": "not run"})
            continue
        if not isinstance(d, dict) or not _is_num(d.get("mean_all")) or not isinstance(d.get("xgqa"), dict):
            raise ReportInputError(f"{path}: expected 'mean_all' and 'xgqa' (as mblip.ablations.run_variant writes)")
        row = {"variant": name, "what changes": d.get("description", ""), "xGQA avg": SCALE * d["mean_all"],
               "xGQA non-en": SCALE * d["mean_non_en"] if _is_num(d.get("mean_non_en")) else None,
               "xGQA en": SCALE * d["xgqa"]["en"] if _is_num(d["xgqa"].get("en")) else None,
               "steps": d.get("steps"), "final loss": d.get("final_loss"), "wall s": d.get("seconds"), "status": "ok"}
        if name == "base":
            base = row
        rows.append(row)
    for row in rows:
        if base is not None and row.get("status") == "ok":
            row["Δ avg vs base"] = row["xGQA avg"] - base["xGQA avg"]
            if row["xGQA non-en"] is not None and base["xGQA non-en"] is not None:
                row["Δ non-en vs base"] = row["xGQA non-en"] - base["xGQA non-en"]
    df = pd.DataFrame(rows, columns=cols)
    for c in ("xGQA avg", "Δ avg vs base", "xGQA non-en", "Δ non-en vs base", "xGQA en"):
        df[c] = df[c].astype(float).round(1)
    return df


def ablation_init_table(root: Path):
    """Bootstrapped vs randomly initialised Q-Former at each step budget (metrics/ablations/init.json):
    mean ± standard deviation over the seeds of the xGQA-analogue accuracy ×100, and of the paired gap."""
    import pandas as pd
    path = Path(root) / "metrics/ablations/init.json"
    d = _read_json(path)
    cols = ["step", "bootstrap", "bootstrap sd", "scratch", "scratch sd", "gap", "gap sd", "min gap", "seeds",
            "status"]
    if d is None:
        return pd.DataFrame([{"step": None, "status": "not run"}], columns=cols)
    if not isinstance(d, dict):
        raise ReportInputError(f"{path}: expected an object keyed by step budget (mblip.ablations.init_ablation)")
    rows = []
    for step, v in sorted(d.items(), key=lambda kv: int(kv[0])):
        try:
            rows.append({"step": int(step), "bootstrap": SCALE * v["bootstrap_mean"],
                         "bootstrap sd": SCALE * v["bootstrap_std"], "scratch": SCALE * v["scratch_mean"],
                         "scratch sd": SCALE * v["scratch_std"], "gap": SCALE * v["gap_mean"],
                         "gap sd": SCALE * v["gap_std"], "min gap": SCALE * v["gap_min"],
                         "seeds": len(v["seeds"]), "status": "ok"})
        except (KeyError, TypeError) as e:
            raise ReportInputError(f"{path}: budget {step!r} lacks {e} (as mblip.ablations.init_ablation writes)")
    df = pd.DataFrame(rows, columns=cols)
    num = [c for c in cols if c not in ("step", "seeds", "status")]
    df[num] = df[num].astype(float).round(1)
    return df


def ablation_figure(df, path: Path) -> Path:
    """Each variant's xGQA-analogue accuracy, non-English and English, with the base variant as a line."""
    import seaborn as sns
    ok = df[df["status"] == "ok"]
    long = ok.melt(id_vars="variant", value_vars=["xGQA non-en", "xGQA en"], var_name="languages",
                   value_name="accuracy ×100").dropna()
    fig, axes = _figure(max(6.0, 0.8 * len(ok) + 2), 3.8)
    ax = axes[0, 0]
    sns.barplot(data=long, x="variant", y="accuracy ×100", hue="languages", ax=ax)
    base = ok[ok["variant"] == "base"]
    if len(base) and base["xGQA non-en"].notna().all():
        ax.axhline(float(base["xGQA non-en"].iloc[0]), color="0.3", ls="--", lw=1, label="base, non-en")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8)
    ax.set_title("Ablations: xGQA analogue (greedy), equal step budgets")
    return _save(fig, path)


def xgqa_types_figure(df, path: Path) -> Path:
    """xGQA accuracy outside English per question type (the finest kind the table has), one bar per model: where
    the re-aligned model falls below the text-only ceiling."""
    import seaborn as sns
    ok = df[df["status"] == "ok"]
    kind = next(k for k in ("detailed", "semantic", "structural") if (ok["kind"] == k).any())
    ok = ok[ok["kind"] == kind]
    cols = [c for c in ok.columns if c.endswith(" avg")]
    long = ok.melt(id_vars="type", value_vars=cols, var_name="model", value_name="accuracy ×100").dropna()
    long["model"] = long["model"].str.removesuffix(" avg").replace({"ceiling": "text-only ceiling"})
    fig, axes = _figure(max(6.0, 0.7 * len(ok) + 2), 3.8)
    ax = axes[0, 0]
    sns.barplot(data=long, x="type", y="accuracy ×100", hue="model", ax=ax)
    ax.tick_params(axis="x", rotation=30)
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.set_title(f"xGQA outside English by question type (GQA {kind} types)")
    return _save(fig, path)


def init_curves_figure(curves, path: Path) -> Path:
    """xGQA-analogue accuracy (mean over languages) against re-alignment step, bootstrapped vs scratch Q-Former;
    the band is ± one standard deviation over the seeds."""
    import seaborn as sns
    d = curves[curves["lang"] == "mean_all"].assign(accuracy=lambda x: SCALE * x["accuracy"])
    fig, axes = _figure(5.5, 3.6)
    ax = axes[0, 0]
    sns.lineplot(data=d, x="step", y="accuracy", hue="init", errorbar="sd", marker="o", ax=ax)
    ax.set_ylabel("xGQA analogue ×100 (mean of languages)")
    ax.set_xlabel("re-alignment step")
    ax.set_title(f"Bootstrapped vs scratch Q-Former ({d['seed'].nunique()} seeds)")
    return _save(fig, path)


# --------------------------------------------------------------------------------------------- markdown
def _cell(v) -> str:
    import math
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) >= 0.05 or v == 0 else f"{v:.3g}"
    return str(v).replace("|", "\\|")


def to_markdown(df, float_digits: dict[str, int] | None = None) -> str:
    """A pipe table (GitHub Markdown); empty cells for missing values. Numbers right-aligned."""
    import pandas as pd
    digits = float_digits or {}
    cols = list(df.columns)
    numeric = {c for c in cols if pd.api.types.is_numeric_dtype(df[c])}
    lines = ["| " + " | ".join(str(c) for c in cols) + " |",
             "|" + "|".join("---:" if c in numeric else "---" for c in cols) + "|"]
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            cells.append(f"{v:.{digits[c]}f}" if c in digits and _is_num(v) and v == v else _cell(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write_table(df, out: Path, name: str, title: str, note: str = "", float_digits=None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / f"{name}.csv", out / f"{name}.md"
    df.to_csv(csv_path, index=False)
    md = f"## {title}\n\n" + (f"{note}\n\n" if note else "") + to_markdown(df, float_digits)
    md_path.write_text(md, encoding="utf-8")
    return [csv_path, md_path]


# --------------------------------------------------------------------------------------------- figures
def _figure(w: float, h: float, ncols: int = 1, nrows: int = 1):
    """A figure outside pyplot (no global state, no GUI backend; savefig renders with Agg)."""
    import seaborn as sns
    from matplotlib.figure import Figure
    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.9)
    fig = Figure(figsize=(w, h), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def majority_baseline(predictions_path: Path) -> tuple[str, float] | None:
    """(most frequent reference answer, its share) over a predictions file: the accuracy of always giving that
    answer. None when the file is missing or has no single references."""
    from collections import Counter
    path = Path(predictions_path)
    if not path.exists():
        return None
    refs = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            ref = json.loads(line).get("reference")
        except (json.JSONDecodeError, AttributeError) as e:
            raise ReportInputError(f"{path}:{i}: not a JSON object ({e})") from e
        if isinstance(ref, str):
            refs.append(ref.strip().lower())
    if not refs:
        return None
    answer, count = Counter(refs).most_common(1)[0]
    return answer, count / len(refs)


def per_language_figure(scores, bench: str, chance: tuple[str, float] | None, path: Path) -> Path:
    """Bars per language, zero-shot vs fine-tuned, with a dashed line for chance/majority (x100)."""
    import seaborn as sns
    view = VIEWS[bench]
    langs = _lang_order(scores["lang"].unique())
    fig, axes = _figure(max(5.0, 0.75 * len(langs) + 2), 3.6)
    ax = axes[0, 0]
    sns.barplot(data=scores, x="lang", y="value", hue="setting", order=langs, ax=ax,
                hue_order=[s for s in ("zero-shot", "fine-tuned") if s in set(scores["setting"])])
    if chance is not None:
        label, value = chance
        ax.axhline(SCALE * value, ls="--", color="0.3", lw=1.2, label=label)
    ax.set_title(f"{view['title']}: {view['metric']} per language")
    ax.set_xlabel("language")
    ax.set_ylabel(f"{view['metric']} (×100)")
    ax.set_ylim(0, max(100.0, float(scores["value"].max()) * 1.1) if view["metric"] == "accuracy" else None)
    ax.legend(loc="upper right", fontsize=8, frameon=True)
    return _save(fig, path)


def xm3600_figure(values: dict[str, float], path: Path, bench: str = "xm3600") -> Path:
    import pandas as pd
    import seaborn as sns
    metric = VIEWS[bench]["metric"]
    langs = _lang_order(values)
    df = pd.DataFrame({"lang": langs, "value": [SCALE * values[l] for l in langs]})
    fig, axes = _figure(max(5.0, 0.45 * len(langs) + 2), 3.4)
    ax = axes[0, 0]
    sns.barplot(data=df, x="lang", y="value", order=langs, color=sns.color_palette()[0], ax=ax)
    ax.set_title(f"{VIEWS[bench]['title']} zero-shot: {metric} per language")
    ax.set_xlabel("language")
    ax.set_ylabel(f"{metric} (×100)")
    if len(langs) > 16:
        ax.tick_params(axis="x", labelrotation=90)
    return _save(fig, path)


def learning_curves_figure(histories: dict[str, "object"], path: Path) -> Path:
    """Training loss against optimizer step, one panel per run (warm-up, re-alignment, each fine-tuning)."""
    ncols = min(3, len(histories))
    nrows = -(-len(histories) // ncols)
    fig, axes = _figure(3.6 * ncols, 2.9 * nrows, ncols, nrows)
    for ax in axes.flat[len(histories):]:
        ax.set_visible(False)
    for ax, (name, df) in zip(axes.flat, histories.items()):
        ax.plot(df["step"], df["loss"], marker="o" if len(df) < 30 else None, ms=3)
        ax.set_title(name)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss")
    fig.suptitle("Learning curves")
    return _save(fig, path)


def translation_figure(df, path: Path) -> Path:
    """One panel per quality measure, bars per language."""
    import seaborn as sns
    metrics = [m for m in TRANSLATE_METRICS if m in set(df["metric"])] + \
              sorted(m for m in set(df["metric"]) if m not in TRANSLATE_METRICS)
    ncols = min(2, len(metrics))
    nrows = -(-len(metrics) // ncols)
    langs = sorted(df["lang"].unique())
    fig, axes = _figure(max(4.5, 0.5 * len(langs) + 1.5) * ncols, 2.9 * nrows, ncols, nrows)
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    for ax, m in zip(axes.flat, metrics):
        sns.barplot(data=df[df["metric"] == m], x="lang", y="value", order=langs, color=sns.color_palette()[2], ax=ax)
        ax.set_title(TRANSLATE_METRICS.get(m, m))
        ax.set_xlabel("language")
        ax.set_ylabel("chrF" if m.startswith("chrf") else "%" if m.endswith("_pct") else m)
        if m.startswith("chrf") or m.endswith("_pct"):
            ax.set_ylim(0, 100)  # both on a 0-100 scale: a fixed axis keeps runs comparable
    fig.suptitle("Machine translation of the task mix: quality per language")
    return _save(fig, path)


def _read_predictions(path: Path) -> list[dict]:
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ReportInputError(f"{path}:{i}: not valid JSON ({e})") from e
        missing = [k for k in ("id", "lang", "images", "prediction") if k not in row]
        if missing:
            raise ReportInputError(f"{path}:{i}: missing {missing} (as mblip.evaluate.run writes predictions)")
        rows.append(row)
    return rows


def prediction_grid(panels: Sequence[tuple[str, Path]], data_root: Path | None, n: int = 4,
                    langs: Sequence[str] | None = None):
    """Test images with the model's outputs in several languages: one figure row per predictions file
    (``(title, path)``), ``n`` images each, the same example id in every language. QA rows show the English prompt,
    the gold answer and a ✓/✗ per language. Returns (figure, number of images that could not be found)."""
    from PIL import Image
    fonts = _fonts()
    loaded = []
    for title, path in panels:
        by_id: dict[str, dict[str, dict]] = {}
        for row in _read_predictions(Path(path)):
            by_id.setdefault(str(row["id"]), {})[row["lang"]] = row
        if not by_id:
            raise ReportInputError(f"{path}: no predictions")
        have = set.intersection(*(set(v) for v in by_id.values()))
        chosen = [l for l in (langs or SAMPLE_LANGS) if l in have][:5] or sorted(have)[:5]
        # Different images first (xGQA asks several questions about one image), then the other examples.
        complete = [i for i, v in by_id.items() if all(l in v for l in chosen)]
        first_of_image = {}
        for i in complete:
            first_of_image.setdefault(by_id[i][chosen[0]]["images"][0], i)
        ids = (list(first_of_image.values()) + [i for i in complete if i not in first_of_image.values()])[:n]
        loaded.append((title, chosen, [by_id[i] for i in ids]))
    ncols = max(len(ex) for _, _, ex in loaded)
    fig, axes = _figure(3.1 * ncols, 4.4 * len(loaded), ncols, len(loaded))
    missing = 0
    for r, (title, chosen, examples) in enumerate(loaded):
        for c in range(ncols):
            ax = axes[r, c]
            ax.grid(False)
            ax.set_xticks([]), ax.set_yticks([])
            if c >= len(examples):
                ax.set_visible(False)
                continue
            ex = examples[c]
            first = ex[chosen[0]]
            img_path = Path(data_root) / first["images"][0] if data_root is not None else None
            if img_path is not None and img_path.exists():
                ax.imshow(Image.open(img_path).convert("RGB"))
            else:
                missing += 1
                ax.text(0.5, 0.5, f"image not found:\n{first['images'][0]}", ha="center", va="center",
                        fontsize=7, transform=ax.transAxes)
            lines = []
            for l in chosen:
                e = ex[l]
                mark = "" if "correct" not in e else (" ✓" if e["correct"] else " ✗")
                lines.append(f"{l}: " + display_text(textwrap.shorten(e["prediction"] or "(empty)", 40)) + mark)
            ax.set_xlabel("\n".join(lines), fontsize=7.5, loc="left", fontfamily=fonts, linespacing=1.3)
            head = str(first["id"])
            if "reference" in first:
                head = textwrap.fill(textwrap.shorten(first.get("prompt", ""), 84), 42) + \
                    f"\ngold: {first['reference']}"
            ax.set_title(head, fontsize=7.5, loc="left", fontfamily=fonts)
        axes[r, 0].set_ylabel(title, fontsize=9)
    fig.suptitle("Sample test images with predictions in several languages")
    return fig, missing


# --------------------------------------------------------------------------------------------- build
def _resolve(cfg_or_root):
    """(repo root, config or None, data folder of the test images or None)."""
    from mblip.config import Config
    if isinstance(cfg_or_root, Config):
        from mblip.stages import data_dir
        return Path(cfg_or_root.repo_root), cfg_or_root, data_dir(cfg_or_root)
    root = Path(cfg_or_root)
    for d in sorted((root / "artifacts/eval").glob("*/*/metrics.json")):
        layout = (_read_json(d) or {}).get("layout")
        if layout and (root / "data" / layout).is_dir():
            return root, None, root / "data" / layout
    return root, None, None


def _paper_model(cfg) -> str:
    return "bloomz-7b1" if cfg is not None and "bloomz" in str(cfg.models.llm).lower() else "mt0-xl"


def build(cfg_or_root, results_dir: str | Path | None = None, paper_values: Sequence[dict] | None = None,
          data_root: str | Path | None = None) -> dict:
    """Regenerate every table and figure into ``results/`` (see the section comment above).

    ``cfg_or_root``: the loaded config (the stage) or a repository root (tests, ad-hoc). ``results_dir``: default
    ``<root>/results``. ``paper_values``: default :data:`PAPER_VALUES`. ``data_root``: where the predictions' image
    paths are relative to (default: the config's data folder, or ``data/<layout>``).

    Returns ``{"tables": {name: DataFrame}, "files": [paths written], "figures": {name: path},
    "not_run": [what had no inputs], "warnings": [...], "summary": path}``. Missing inputs become "not run" rows;
    a malformed input raises :class:`ReportInputError` naming the file.
    """
    import pandas as pd
    root, cfg, images = _resolve(cfg_or_root)
    images = Path(data_root) if data_root is not None else images
    values = PAPER_VALUES if paper_values is None else paper_values
    check_paper_values(values)
    pmodel = _paper_model(cfg)
    out = Path(results_dir) if results_dir is not None else root / "results"
    tdir, fdir = out / "tables", out / "figures"
    files: list[Path] = []
    figures: dict[str, Path] = {}
    warnings: list[str] = []
    kw = {"paper_model": pmodel, "paper_values": values}
    scale_note = "Scores ×100. Empty \"paper\" cells: value not recorded (see `PAPER_VALUES` in mblip/report.py)."

    # 1. tables
    tables = {
        "iglue": iglue_table(root, cfg, **kw),
        "xm3600": per_language_table(root, "xm3600", cfg, **kw),
        "maxm": per_language_table(root, "maxm", cfg, **kw),
        "hallucination": hallucination_table(root, cfg, **kw),
        "ceiling": ceiling_table(root, cfg),
        "xgqa_types": xgqa_types_table(root),
        "standins": standins_table(root),
        "statements": statements_table(root),
        "heldout": heldout_table(root),
        "training": training_table(root, cfg),
        "translation": translation_table(root),
        "ablations": ablation_table(root, cfg),
        "ablation_init": ablation_init_table(root),
        "resources": resources_table(root),
    }
    notes = {
        "iglue": ("IGLUE", f"{scale_note} avg = mean over the non-English languages listed in `avg_over`; "
                  "zero-shot = the re-aligned model, fine-tuned = the merged model fine-tuned on the task's English "
                  f"training data. Paper column: mBLIP {pmodel}."),
        "xm3600": ("XM3600, zero-shot CIDEr per language", scale_note),
        "maxm": ("MaXM, zero-shot accuracy per language", scale_note),
        "hallucination": ("POPE and CHAIR (hallucination)", scale_note + " CHAIR: lower is better."),
        "ceiling": ("The text-only ceiling on the same test questions",
                    "×100. The LLM that was re-aligned reads each test scene's description instead of its image "
                    "(`mblip.ceiling`, the `ceiling` stage), scored by the same evaluator with the same prompts, "
                    "decoding and metric as the zero-shot and fine-tuned models. below ceiling = ceiling − model: "
                    "what the visual side did not carry over. Only the demo world has descriptions."),
        "xgqa_types": ("xGQA accuracy per question type",
                       "×100, GQA's question types (`types` in the question files: structural, semantic and, where "
                       "there are at most 40, detailed) from `by_type` in metrics/eval/*/xgqa.json; avg = mean over "
                       "the non-English languages; n = questions of the type in English."),
        "standins": ("Stand-ins beside the re-aligned model",
                     "Exact match ×100. The text-only LMs read the scene description instead of the image: their "
                     "QA accuracy is the ceiling for the re-aligned model. \"same questions\" = the xGQA analogue's "
                     "test questions (the `ceiling` stage); \"held-out\" = the standins stage's own held-out "
                     "training-world scenes; the other xGQA columns are on the benchmark's test scenes."),
        "statements": ("XVNLI and MaRVL beside the text-only accuracy on such statements",
                       "Accuracy ×100. The LLM judges hypotheses (yes / no / maybe; chance 33.3) and two-scene "
                       "statements (yes / no; chance 50) from scene descriptions: \"same questions\" = the "
                       "benchmark's own test statements with its prompts and decoding (the `ceiling` stage); "
                       "\"held-out\" = the standins stage's held-out training-world scenes, greedy. The ceiling for "
                       "the re-aligned model, which reads the images."),
        "heldout": ("The re-aligned model on its own tasks, held-out scenes",
                    "×100, from metrics/heldout.json (the `heldout` stage): the validation mix's records "
                    "(artifacts/taskmix/val: held-out scenes, every language's gold text), answered with their own "
                    "prompts. Exact match after VQA cleaning of both sides; avg = mean over the non-English "
                    "languages. Yes / no tasks: POPE's answer rule; chance 50 on a balanced task."),
        "training": ("Training stages", "From metrics/<stage>.json."),
        "translation": ("Translation quality per language", "From plots/translate_quality.csv (chrF 0–100, %)."),
        "ablations": ("Ablations (one change each, equal re-alignment steps)",
                      "xGQA-analogue exact match ×100, greedy, on `ablations.eval_limit` questions per language; "
                      "non-en = mean of the non-English languages. One seed per variant: read differences of a few "
                      "points against the seed spread in the next table."),
        "ablation_init": ("Bootstrapped vs randomly initialised Q-Former",
                          "Mean and standard deviation over seeds (`ablations.init_seeds`) of the xGQA-analogue "
                          "exact match ×100 averaged over languages; gap = bootstrap − scratch, paired by seed."),
        "resources": ("Runtime and peak memory per stage",
                      "From metrics/resources/ (mblip.measure around each notebook stage, in its last run): wall "
                      "and CPU seconds, peak resident memory of the largest process (the notebook's kernel). The "
                      "report stage is not measured. Total peak = the largest stage's."),
    }
    for name, df in tables.items():
        title, note = notes[name]
        files += _write_table(df, tdir, name, title, note)
    label = {"iglue": lambda r: f"{r['benchmark']} {r['setting']}", "hallucination": lambda r: r["benchmark"],
             "training": lambda r: f"training {r['stage']}", "xm3600": lambda r: "XM3600", "maxm": lambda r: "MaXM",
             "standins": lambda r: "stand-ins", "statements": lambda r: "statement ceilings",
             "heldout": lambda r: "held-out task mix",
             "ceiling": lambda r: f"{r['benchmark']} {r['model']}", "xgqa_types": lambda r: "xGQA by question type",
             "translation": lambda r: "translation quality",
             "ablations": lambda r: f"ablation {r['variant']}", "ablation_init": lambda r: "ablation init curves",
             "resources": lambda r: "runtime table"}
    not_run = [f"{label[name](r)}: {r['status']}"
               for name, df in tables.items() for _, r in df[df["status"] != "ok"].iterrows()]

    # 2. per-language bars (zero-shot vs fine-tuned) per benchmark, with chance / majority lines
    for bench in IGLUE + ("maxm",):
        metric = VIEWS[bench]["metric"]
        parts = []
        for setting, model in (("zero-shot", "realign"), ("fine-tuned", f"finetune-{bench}")):
            run = read_eval(root, model, bench)
            if run is not None:
                parts += [{"lang": l, "value": SCALE * v, "setting": setting}
                          for l, v in _metric(run, bench, metric).items()]
        if not parts:
            continue
        chance = VIEWS[bench].get("chance")
        if chance == "majority":
            maj = None
            for model in ("realign", f"finetune-{bench}"):
                maj = maj or majority_baseline(root / "artifacts/eval" / model / bench / "predictions.jsonl")
            chance = (f"majority answer “{maj[0]}” ({SCALE * maj[1]:.1f})", maj[1]) if maj else None
            if maj is None:
                warnings.append(f"{bench}: no predictions file, majority baseline not drawn")
        elif chance is not None:
            chance = (f"{VIEWS[bench]['chance_label']} ({SCALE * chance:.1f})", chance)
        figures[f"per_language_{bench}"] = per_language_figure(
            pd.DataFrame(parts), bench, chance, fdir / f"per_language_{bench}.png")

    # 3. XM3600 per language
    run = read_eval(root, "realign", "xm3600")
    if run is not None:
        figures["xm3600"] = xm3600_figure(_metric(run, "xm3600", "CIDEr"), fdir / "xm3600_cider.png")

    # 4. stand-in ceiling vs the re-aligned model
    st = tables["standins"]
    if (st["status"] == "ok").any():
        cols = [c for c in st.columns if c not in ("lang", "status") and "English" not in c and "Flan" not in c]
        long = st.melt(id_vars="lang", value_vars=cols, var_name="setting", value_name="value").dropna()
        figures["standins"] = _standins_figure(long, fdir / "standins_ceiling.png")

    # 4b. xGQA by question type: the ceiling beside the re-aligned and fine-tuned models
    if (tables["xgqa_types"]["status"] == "ok").any():
        figures["xgqa_types"] = xgqa_types_figure(tables["xgqa_types"], fdir / "xgqa_types.png")

    # 5. learning curves
    histories = {}
    names = ["warmup", "realign"] + sorted(p.stem.removesuffix("_history") for p in (root / "plots").glob(
        "finetune_*_history.csv"))
    for name in names:
        df = _read_csv(root / "plots" / f"{name}_history.csv", ["step", "loss"])
        if df is not None and not df.empty:
            histories[name.replace("_", " ")] = df
    if histories:
        figures["learning_curves"] = learning_curves_figure(histories, fdir / "learning_curves.png")
    else:
        not_run.append("learning curves: no plots/*_history.csv")

    # 6. translation quality
    tq = _read_csv(root / "plots/translate_quality.csv", ["lang", "metric", "value"])
    if tq is not None and not tq.empty:
        figures["translation"] = translation_figure(tq, fdir / "translation_quality.png")

    # 7. sample grid: single-image benchmarks' predictions in several languages
    panels = [(title, root / "artifacts/eval" / model / bench / "predictions.jsonl") for title, model, bench in (
        ("XM3600 captions, zero-shot", "realign", "xm3600"), ("xGQA answers, zero-shot", "realign", "xgqa"),
        ("xGQA answers, fine-tuned", "finetune-xgqa", "xgqa"))]
    panels = [(t, p) for t, p in panels if p.exists()]
    if panels:
        fig, missing = prediction_grid(panels, images)
        figures["samples"] = _save(fig, fdir / "sample_predictions.png")
        if missing:
            warnings.append(f"sample grid: {missing} image(s) not found under {images} (drawn as placeholders)")

    # 8. ablations
    if (tables["ablations"]["status"] == "ok").any():
        figures["ablations"] = ablation_figure(tables["ablations"], fdir / "ablations.png")
    curves = _read_csv(root / "plots/ablations/init_curves.csv", ["init", "seed", "step", "lang", "accuracy"])
    if curves is not None and not curves.empty:
        figures["ablation_init"] = init_curves_figure(curves, fdir / "ablation_init_curves.png")

    files += list(figures.values())
    summary = write_summary(out, tables, figures, not_run, cfg, root)
    files.append(summary)
    for w in warnings:
        logging.getLogger("mblip").warning(w)
    return {"tables": tables, "files": files, "figures": figures, "not_run": not_run, "warnings": warnings,
            "summary": summary}


def _standins_figure(long, path: Path) -> Path:
    import seaborn as sns
    langs = _lang_order(long["lang"].unique())
    fig, axes = _figure(max(6.0, 0.9 * len(langs) + 2), 3.6)
    ax = axes[0, 0]
    sns.barplot(data=long, x="lang", y="value", hue="setting", order=langs, ax=ax)
    ax.set_title("Text-only stand-in LMs (ceiling) vs the re-aligned model")
    ax.set_xlabel("language")
    ax.set_ylabel("exact match (×100)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, loc="upper right")
    return _save(fig, path)


# Figures the README shows inline; the others are linked.
SUMMARY_FIGURES = ("per_language_xgqa", "xgqa_types", "xm3600", "learning_curves", "ablations", "ablation_init",
                   "samples")


def _preset(cfg, root: Path) -> str:
    if cfg is not None:
        return cfg.preset
    try:
        import yaml
        return str((yaml.safe_load((Path(root) / "params.yaml").read_text()) or {}).get("preset", "unknown"))
    except (OSError, ValueError, AttributeError):
        return "unknown"


def write_summary(out: Path, tables: dict, figures: dict, not_run: Sequence[str], cfg, root: Path) -> Path:
    """results/summary.md, what the README shows: the IGLUE table, XM3600 in one line, the stand-ins beside the
    re-aligned model, what was not run, and the figures, linked relative to the repository root (the README's
    folder)."""
    out, root = Path(out), Path(root)
    try:
        rel = out.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        rel = out.resolve().as_posix()
    preset = _preset(cfg, root)
    lines = ["<!-- generated by mblip.report.build from metrics/, plots/ and artifacts/ (`dvc repro report`); "
             "edit mblip/report.py, not this text -->",
             f"Preset **{preset}**." + (" Demo-world numbers show that the pipeline runs end to end; they are not "
                                        "the paper's." if preset == "demo" else ""),
             "Scores ×100; avg = mean over the non-English languages. A *paper* cell stays empty until the "
             "reported value is recorded with its source (`PAPER_VALUES` in `mblip/report.py`).", "",
             "**IGLUE**", "",
             to_markdown(tables["iglue"][["benchmark", "setting", "metric", "en", "avg", "paper en", "paper avg",
                                          "status"]])]
    xm = tables["xm3600"]
    if (xm["status"] == "ok").any():
        cells = [f"{r['lang'].split(' (')[0]} {_cell(r['CIDEr'])}" for _, r in xm.iterrows()
                 if r["lang"] == "en" or r["lang"].startswith("avg")]
        lines.append(f"**XM3600** zero-shot CIDEr: {', '.join(cells)} ([per language]({rel}/tables/xm3600.md)).")
    ce = tables["ceiling"]
    if (ce["status"] == "ok").any():
        lines += ["", "**The text-only ceiling on the same test questions** (×100; the re-aligned LLM reading each "
                  "scene's description instead of its image; below ceiling = ceiling − model)", "",
                  to_markdown(ce[ce["status"] == "ok"][["benchmark", "model", "metric", "en", "avg",
                                                        "below ceiling en", "below ceiling avg"]])]
    ty = tables["xgqa_types"]
    if (ty["status"] == "ok").any():
        shown = ty[(ty["status"] == "ok") & (ty["kind"] == ("detailed" if (ty["kind"] == "detailed").any()
                                                            else "semantic"))]
        lines += ["", f"**xGQA by question type** (GQA `{shown['kind'].iloc[0]}` types, ×100; "
                  f"[structural and semantic]({rel}/tables/xgqa_types.md))", "",
                  to_markdown(shown.drop(columns=["kind", "status"]))]
    st = tables["standins"]
    if (st["status"] == "ok").any():
        lines += ["", "**Stand-ins vs the re-aligned model** (exact match ×100; the text-only LMs read the scene "
                  "description: a ceiling)", "", to_markdown(st.drop(columns=["status"]))]
    sm = tables["statements"]
    if (sm["status"] == "ok").any():
        lines += ["", "**XVNLI and MaRVL beside the text-only accuracy on such statements** (×100; chance 33.3 and "
                  "50)", "", to_markdown(sm.drop(columns=["status"]))]
    ho = tables["heldout"]
    if (ho["status"] == "ok").any():
        lines += ["", "**The re-aligned model on its own training tasks, held-out scenes** (×100; yes / no tasks: "
                  "chance 50)", "", to_markdown(ho.drop(columns=["status"]))]
    ab = tables["ablations"]
    if (ab["status"] == "ok").any():
        lines += ["", "**Ablations** (xGQA analogue ×100, one change each, equal steps, one seed)", "",
                  to_markdown(ab[ab["status"] == "ok"][["variant", "what changes", "xGQA avg", "Δ avg vs base",
                                                        "xGQA non-en", "Δ non-en vs base", "xGQA en"]])]
    ai = tables["ablation_init"]
    if (ai["status"] == "ok").any():
        lines += ["", "**Bootstrapped vs scratch Q-Former** (mean ± sd over seeds, ×100)", "",
                  to_markdown(ai.drop(columns=["status"]))]
    rs = tables["resources"]
    if (rs["status"] == "ok").any():
        total = rs[rs["stage"] == "total"].iloc[0]
        lines += ["", f"**Runtime**: {_cell(total['wall s'])} s wall, {_cell(total['CPU s'])} s CPU over "
                  f"{len(rs) - 1} stage runs; peak memory {_cell(total['peak RSS MiB'])} MiB "
                  f"([per stage]({rel}/tables/resources.md)); the report stage is not counted."]
    if not_run:
        lines += ["", "**Not run**: " + "; ".join(not_run) + "."]
    lines += ["", "Tables: " + ", ".join(f"[{n}]({rel}/tables/{n}.md)" for n in tables) + ".",
              "Figures: " + ", ".join(f"[{n.replace('_', ' ')}]({rel}/figures/{Path(p).name})"
                                      for n, p in figures.items()) + ".", ""]
    lines += [f"![{n.replace('_', ' ')}]({rel}/figures/{Path(figures[n]).name})"
              for n in SUMMARY_FIGURES if n in figures]
    path = out / "summary.md"
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return path


def update_readme(readme_path: str | Path, results_dir: str | Path) -> bool:
    """Put ``<results_dir>/summary.md`` between the README's ``<!-- results:start -->`` and
    ``<!-- results:end -->`` lines, leaving everything else as it is. Returns True when the README changed
    (a second run with the same results changes nothing)."""
    readme, summary = Path(readme_path), Path(results_dir) / "summary.md"
    text = readme.read_text(encoding="utf-8")
    n_start, n_end = text.count(README_START), text.count(README_END)
    if n_start != 1 or n_end != 1 or text.index(README_START) > text.index(README_END):
        raise ValueError(f"{readme}: needs exactly one '{README_START}' followed by one '{README_END}' "
                         f"(found {n_start} start / {n_end} end marker(s), in that order?); add them "
                         "where the results section goes")
    if not summary.exists():
        raise FileNotFoundError(f"{summary} is missing: run the report stage first (`dvc repro report`)")
    head, rest = text.split(README_START)
    _, tail = rest.split(README_END)
    new = f"{head}{README_START}\n{summary.read_text(encoding='utf-8').strip()}\n{README_END}{tail}"
    if new == text:
        return False
    readme.write_text(new, encoding="utf-8")
    return True


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m mblip.report [--params params.yaml] [--readme README.md]``: build results/, update the README."""
    import argparse
    from mblip import config
    p = argparse.ArgumentParser(prog="python -m mblip.report", description=main.__doc__)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--readme", default=None, help="also update this README's results section")
    args = p.parse_args(argv)
    cfg = config.load(args.params)
    result = build(cfg)
    print(f"report: {len(result['files'])} files in {Path(result['summary']).parent}")
    for line in result["not_run"]:
        print("  not run:", line)
    if args.readme:
        print("README", "updated" if update_readme(args.readme, Path(result["summary"]).parent) else "unchanged")


if __name__ == "__main__":
    main()
