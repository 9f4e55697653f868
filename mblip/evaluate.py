"""One evaluator per benchmark of the mBLIP paper, model-agnostic, reading each benchmark's official files.

Following the big_vision evaluator model: every evaluator class says in its docstring which official protocol it
follows and where it departs from it (``shared/reference/eval-suite.md``, section numbers below point there); a
multilingual evaluation is a loop over a language table (:data:`BENCHMARKS`). Metric code lives in
:mod:`mblip.metrics`; prompts come from :func:`mblip.templates.eval_prompt`.

    result = run("xgqa", generate, data_root="data/paper", out_dir="runs/eval/xgqa")
    result.metrics["average"]["mean"]["accuracy"]       # mean over the non-English languages (IGLUE "avg")

``generate(images, prompts, decoding) -> list[str]`` is the only thing a model must provide: ``images`` holds one
list of image paths per example (one path, or left and right for MaRVL), ``prompts`` the protocol prompt of each
example and ``decoding`` a :class:`Decoding`. It loads the images itself, so any model works (ours, a released
checkpoint, another VLM). Before the first call every image is checked (exists, ``PIL.Image.verify``): the authors'
code silently replaces an unreadable image by a black one (§1.3); here a missing or broken image stops the run
with its path.

``run`` writes, in ``out_dir``:

* ``predictions.jsonl`` -- one line per example: bench, id, lang, images, prompt, prediction, reference(s) and,
  where defined, ``correct`` (VQAv2: the example's VQA ``accuracy``; CHAIR: its ``hallucinated`` objects);
* ``metrics.json`` -- per-language metrics, the averages (see below), decoding settings and options;
* ``per_language.csv`` -- long format ``bench,lang,metric,value`` (averages as lang ``mean`` / ``mean_all`` /
  ``mean_without_quz``) for DVC plots.

Averages (:func:`mblip.metrics.average`): ``mean`` is over the languages other than English (IGLUE and the mBLIP
tables report English separately), ``mean_all`` over every evaluated language. XM3600 adds
``mean_without_quz`` (Cusco Quechua is not an mBLIP training language; eval-suite §13 leaves open which set the
paper averaged). POPE's "languages" are its three negative-sampling settings and CHAIR's its two prompts; their
``mean`` is over all of them. All scores are on the raw scale (accuracy in [0, 1], CIDEr as pycocoevalcap
returns it); tables multiply by 100.

``score(bench, predictions, references)`` scores any predictions file (ours, or the official submission formats:
GQA ``[{"questionId", "prediction"}]``, COCO results ``[{"image_id", "caption"}]``, VQA
``[{"question_id", "answer"}]``, POPE answer lines) with the same code; ``python -m mblip.evaluate score ...``
(see :func:`add_score_parser`) prints the result as JSON.

Nothing here does I/O at import time.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import re
import sys
import time
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mblip import metrics as M
from mblip import templates as T

__all__ = [
    "Decoding", "DECODING", "Example", "Layout", "Benchmark", "BENCHMARKS", "EvalResult", "EvalDataError",
    "ImageError", "Evaluator", "GQA_TYPE_KINDS", "accuracy_by_type", "XGQA", "XVNLI", "MaRVL", "XFlickrCO",
    "XM3600", "MaXM", "POPE", "CHAIR", "VQAv2", "COCOCaptions", "get_benchmark", "load_examples", "check_images",
    "run", "score", "read_predictions", "add_score_parser", "main",
]

log = logging.getLogger(__name__)

Generate = Callable[[list[list[Path]], list[str], "Decoding"], list[str]]


class EvalDataError(ValueError):
    """A benchmark or predictions file is missing or malformed. The message names the file (and line) and the fix."""


class ImageError(FileNotFoundError):
    """Images are missing or unreadable. Raised before any generation, listing the paths."""


# =====================================================================================================================
# Decoding
# =====================================================================================================================

@dataclass(frozen=True)
class Decoding:
    """Generation settings passed to ``generate``. The defaults are mBLIP's short-answer profile (§1.1).

    The three protocol profiles are in :data:`DECODING`; :meth:`override` applies a caller's values (e.g. from
    params.yaml) on top of a benchmark's profile. ``generate_kwargs()`` gives the HF ``generate`` arguments.
    """
    num_beams: int = 5
    """Beam width. mBLIP: 5 for every benchmark, no sampling."""
    max_new_tokens: int = 10
    """Upper bound on generated tokens. mBLIP: 10 for short answers, 50 for captions, 256 for CHAIR."""
    min_new_tokens: int = 1
    """Lower bound on generated tokens (mBLIP: 1, so an answer is never empty)."""
    length_penalty: float = -1.0
    """Beam-score length exponent. mBLIP: -1 for short answers (prefers short outputs), 1 for captions and CHAIR."""
    repetition_penalty: float = 1.0
    """HF repetition penalty (1 = none). mBLIP: 1.5 for CHAIR only."""

    def __post_init__(self):
        for key in ("num_beams", "max_new_tokens", "min_new_tokens"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "min_new_tokens" else 1):
                least = 0 if key == "min_new_tokens" else 1
                raise ValueError(f"decoding.{key} must be an integer >= {least}, got {value!r}")
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(f"decoding.min_new_tokens ({self.min_new_tokens}) must not exceed "
                             f"decoding.max_new_tokens ({self.max_new_tokens})")
        for key in ("length_penalty", "repetition_penalty"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
                raise ValueError(f"decoding.{key} must be a number, got {value!r}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"decoding.repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty!r}")

    def override(self, values: Decoding | Mapping[str, Any] | None) -> Decoding:
        """A copy with ``values`` applied (a mapping of field names, or a whole :class:`Decoding`)."""
        if values is None:
            return self
        if isinstance(values, Decoding):
            return values
        names = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"unknown decoding key(s) {unknown}; known: {', '.join(names)}")
        return dataclasses.replace(self, **dict(values))

    def generate_kwargs(self) -> dict:
        """Keyword arguments for HF ``generate`` (beam search, no sampling, as mBLIP)."""
        return {**dataclasses.asdict(self), "do_sample": False}


#: The protocol's decoding profiles (``configs/evaluation/mblip_eval_*.yaml``, eval-suite §1.1).
DECODING: dict[str, Decoding] = {
    "short": Decoding(),  # xGQA, XVNLI, MaRVL, POPE, MaXM, VQAv2
    "caption": Decoding(max_new_tokens=50, length_penalty=1.0),  # XM3600, xFlickrCO, COCO
    "chair": Decoding(max_new_tokens=256, length_penalty=1.0, repetition_penalty=1.5),
}


# =====================================================================================================================
# Examples and file reading
# =====================================================================================================================

@dataclass
class Example:
    """One evaluation item: what the model is asked, what it is scored against, and where it came from."""
    id: str
    """Identifier as in the official file (question id, pairID, image key, ...), as a string."""
    lang: str | None
    """Language code (POPE: negative-sampling setting; CHAIR: prompt variant)."""
    prompt: str
    """The protocol prompt (``templates.eval_prompt``)."""
    reference: Any
    """Label string, or list of reference captions / answers, or list of ground-truth objects (CHAIR)."""
    image_fields: tuple[dict, ...]
    """Per image, the values that fill the layout's image pattern (``name``, MaRVL ``concept``, ...)."""
    source: tuple[Path, int | str]
    """(file, line number) for JSONL, (file, regex locating the record) for JSON; see :attr:`where`."""
    images: tuple[Path, ...] = ()
    """Resolved image paths (filled by :func:`load_examples`)."""
    types: Mapping[str, str] = field(default_factory=dict)
    """Question types where the file has them (GQA's ``types``: ``structural``, ``semantic``, ``detailed``)."""

    @property
    def where(self) -> str:
        """``file:line`` of the record (looked up on demand for JSON files)."""
        return _where(*self.source)


def _where(path: Path, loc: int | str) -> str:
    if isinstance(loc, int):
        return f"{path}:{loc}"
    try:
        text = Path(path).read_text(encoding="utf-8")
        m = re.search(loc, text)
    except (OSError, re.error):
        m = None
    if m is None:
        return f"{path} (record {loc!r})"
    return f"{path}:{text.count(chr(10), 0, m.start()) + 1}"


def _key_regex(key: str) -> str:
    """Regex locating a JSON object key (an xGQA question id) in the raw file text."""
    return re.escape(json.dumps(key, ensure_ascii=False)) + r"\s*:"


def _value_regex(name: str, value) -> str:
    """Regex locating ``"name": value`` in the raw file text (ids in JSON lists)."""
    return re.escape(json.dumps(name)) + r"\s*:\s*" + re.escape(json.dumps(value, ensure_ascii=False)) + r"(?![\w.])"


def _missing_file(path: Path, what: str, bench: str | None = None) -> EvalDataError:
    return EvalDataError(f"{what} not found: {path}. Fetch it (`python -m mblip fetch --only {bench or '<bench>'}`), "
                         "or point data_root/layout at where it is (see BENCHMARKS in mblip/evaluate.py).")


def _read_jsonl(path: Path, what: str = "annotation file", bench: str | None = None):
    """Yield (line number, record) for each non-blank line; malformed lines raise naming file:line."""
    path = Path(path)
    if not path.is_file():
        raise _missing_file(path, what, bench)
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise EvalDataError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno}); every line "
                                    "of a JSONL file must be one JSON object. Fix or re-download the file.") from None
            if not isinstance(row, dict):
                raise EvalDataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield lineno, row


def _read_json(path: Path, what: str = "annotation file", bench: str | None = None):
    path = Path(path)
    if not path.is_file():
        raise _missing_file(path, what, bench)
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise EvalDataError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno}). "
                            "Fix or re-download the file.") from None


def _get(row: Mapping, key: str, source: tuple[Path, int | str], fmt: str, types=str):
    """row[key], checked; a missing or mistyped field names the record's file:line and the expected format."""
    if not isinstance(row, Mapping) or key not in row:
        keys = sorted(row) if isinstance(row, Mapping) else type(row).__name__
        raise EvalDataError(f"{_where(*source)}: record has no {key!r} (it has {keys}); expected the {fmt} format")
    value = row[key]
    if not isinstance(value, types) or isinstance(value, bool) and bool not in _as_tuple(types):
        raise EvalDataError(f"{_where(*source)}: {key!r} must be {_type_names(types)}, got {value!r} "
                            f"(expected the {fmt} format)")
    return value


def _as_tuple(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def _type_names(types) -> str:
    return " or ".join(t.__name__ for t in _as_tuple(types))


def _str_list(row: Mapping, key: str, source, fmt: str) -> list[str]:
    value = _get(row, key, source, fmt, list)
    if not value or not all(isinstance(v, str) for v in value):
        raise EvalDataError(f"{_where(*source)}: {key!r} must be a non-empty list of strings, got {value!r} "
                            f"(expected the {fmt} format)")
    return value


def _prompt(bench: str, *fields: str) -> str:
    try:
        return T.eval_prompt(bench, *fields)
    except KeyError as e:
        raise EvalDataError(f"cannot build the {bench} prompt: {e.args[0]}") from None


# =====================================================================================================================
# Evaluators
# =====================================================================================================================

class Evaluator:
    """Base class: read one language's official file(s) into :class:`Example` s, and score predictions.

    Subclasses set ``name`` (the :data:`BENCHMARKS` key), ``task`` (decoding profile in :data:`DECODING`),
    ``headline`` (metrics averaged over languages), ``files`` (annotation file roles of the layout) and
    ``reference_key`` (name of the reference field in predictions.jsonl).
    """
    name = ""
    task = "short"
    headline: tuple[str, ...] = ("accuracy",)
    files: tuple[str, ...] = ("annotations",)
    reference_key = "reference"
    needs_lang = False
    """`score` needs the language (caption tokenisation, prompt language)."""
    score_default_lang: str | None = None
    predictions_define_subset = False
    """The protocol scores a subset of a larger reference file (VQAv2, CHAIR): `score` uses the predicted ids."""
    images_per_example = 1

    def options(self) -> dict:
        """The evaluator's options, as recorded in metrics.json."""
        return {}

    def read(self, files: Mapping[str, Path], lang: str | None, limit: int | None = None
             ) -> tuple[list[Example], dict]:
        """Examples of one language (at most ``limit``) and info to report (e.g. dropped rows)."""
        raise NotImplementedError

    def references(self, path: Path, lang: str | None) -> tuple[list[Example], dict]:
        """Examples from the one reference file `score` is given (default: the annotation file itself)."""
        return self.read({"annotations": Path(path)}, lang)

    def score(self, examples: Sequence[Example], predictions: Mapping[str, str], lang: str | None
              ) -> tuple[dict, list[dict]]:
        """(metrics, per-example fields such as ``correct``) for the examples of one language."""
        raise NotImplementedError


class _ExactMatch(Evaluator):
    """Shared scorer: mBLIP ``classification_evaluation`` (§3): ``vqa_clean`` on the prediction, lower/strip on the
    label, exact match (``accuracy``, reported) and starts/ends-with (``relaxed_accuracy``)."""
    headline = ("accuracy", "relaxed_accuracy")

    def score(self, examples, predictions, lang):
        preds = [predictions[e.id] for e in examples]
        labels = [e.reference for e in examples]
        correct = [M.exact_match_accuracy([p], [l]) == 1.0 for p, l in zip(preds, labels)]
        return ({"accuracy": M.exact_match_accuracy(preds, labels),
                 "relaxed_accuracy": M.relaxed_accuracy(preds, labels), "n": len(examples)},
                [{"correct": c} for c in correct])


# GQA's question-type fields, in the order its official eval.py reports them (structural, semantic) + ``detailed``
GQA_TYPE_KINDS = ("structural", "semantic", "detailed")


def accuracy_by_type(examples: Sequence[Example], correct: Sequence[bool]) -> dict[str, dict[str, dict]]:
    """``{kind: {type: {"accuracy", "n"}}}`` over the examples that carry a type of that kind (GQA's eval.py
    reports accuracy per structural and per semantic type; ``detailed`` is GQA's fine-grained type)."""
    out: dict[str, dict[str, dict]] = {}
    for kind in GQA_TYPE_KINDS:
        hits: dict[str, list[bool]] = {}
        for ex, c in zip(examples, correct):
            if ex.types.get(kind):
                hits.setdefault(ex.types[kind], []).append(c)
        if hits:
            out[kind] = {t: {"accuracy": sum(v) / len(v), "n": len(v)} for t, v in sorted(hits.items())}
    return out


class XGQA(_ExactMatch):
    """xGQA (IGLUE), mBLIP protocol (eval-suite §3).

    Reads the IGLUE few-shot test split ``xGQA/annotations/few_shot/<lang>/test.json`` (GQA dict
    ``question_id -> {imageId, question, answer, ...}``; 9,666 questions per language; answers stay English), image
    ``<imageId>.jpg``. Prompt ``Question: {question} Short answer in English:``; short-answer decoding; metric
    ``vqa_clean`` + exact match, as mBLIP's ``classification_evaluation``.

    Differs from IGLUE's ``GQA_score.py``: predictions are free text normalised by ``vqa_clean`` (IGLUE compares
    classifier outputs verbatim), so 8 GQA answers such as "t-shirt" can never be matched (kept, faithful to
    mBLIP). Not the 12,578-question zero-shot test-dev file (numbers on the two are not comparable).

    Adds, per language, ``by_type``: accuracy per GQA question type (``types.structural`` / ``semantic`` /
    ``detailed`` of each question, as GQA's own eval.py breaks accuracy down; `accuracy_by_type`), and each
    prediction row carries its ``types``. Files without ``types`` give no ``by_type``.
    """
    name = "xgqa"
    FORMAT = "xGQA (GQA questions dict: {question_id: {imageId, question, answer}})"

    def read(self, files, lang, limit=None):
        path = Path(files["annotations"])
        data = _read_json(path, "xGQA question file", self.name)
        if not isinstance(data, dict):
            raise EvalDataError(f"{path}: expected a JSON object mapping question ids to questions ({self.FORMAT}), "
                                f"got {type(data).__name__}")
        examples = []
        for qid, q in data.items():
            if limit is not None and len(examples) >= limit:
                break
            src = (path, _key_regex(qid))
            question = _get(q, "question", src, self.FORMAT)
            types = q.get("types")
            examples.append(Example(
                id=str(qid), lang=lang, prompt=_prompt("xgqa", question),
                reference=_get(q, "answer", src, self.FORMAT),
                image_fields=({"name": _get(q, "imageId", src, self.FORMAT)},), source=src,
                types={k: str(types[k]) for k in GQA_TYPE_KINDS if types.get(k)} if isinstance(types, dict) else {}))
        return examples, {}

    def score(self, examples, predictions, lang):
        metrics, extras = super().score(examples, predictions, lang)
        by_type = accuracy_by_type(examples, [e["correct"] for e in extras])
        if by_type:
            metrics["by_type"] = by_type
            extras = [{**e, "types": dict(ex.types)} for e, ex in zip(extras, examples)]
        return metrics, extras


class XVNLI(_ExactMatch):
    """XVNLI (IGLUE), mBLIP protocol (eval-suite §4).

    Reads ``XVNLI/annotations/<lang>/test.jsonl`` (SNLI-VE rows ``{gold_label, sentence1, sentence2, pairID,
    Flikr30kID}``), image ``<Flikr30kID>.jpg``; the hypothesis is ``sentence2`` (the image is the premise). Prompt
    ``Is it guaranteed true that "{sentence2}"? Yes, no, or maybe? Answer in English:``; labels entailment -> yes,
    contradiction -> no, neutral -> maybe; metric ``vqa_clean`` + exact match.

    The rows whose gold label is ``-`` (no annotator majority; 14 of 1,164 per language) are dropped, as mBLIP's
    ``generate_xvnli.py`` does, and counted (``n_dropped_gold_dash``). IGLUE keeps them as always-wrong rows
    (denominator 1,164), so IGLUE-convention numbers are up to ~1.2 points lower.
    """
    name = "xvnli"
    FORMAT = "XVNLI JSONL ({gold_label, sentence2, pairID, Flikr30kID} per line)"

    def read(self, files, lang, limit=None):
        path = Path(files["annotations"])
        examples, dropped = [], []
        for lineno, row in _read_jsonl(path, "XVNLI test file", self.name):
            src = (path, lineno)
            gold = _get(row, "gold_label", src, self.FORMAT)
            pair_id = _get(row, "pairID", src, self.FORMAT)
            if gold == "-":
                dropped.append(pair_id)
                continue
            if gold not in T.XVNLI_LABELS:
                raise EvalDataError(f"{path}:{lineno}: gold_label {gold!r} is not one of "
                                    f"{sorted(T.XVNLI_LABELS) + ['-']}")
            if limit is not None and len(examples) >= limit:
                continue  # keep counting dropped rows over the whole file
            examples.append(Example(
                id=pair_id, lang=lang, prompt=_prompt("xvnli", _get(row, "sentence2", src, self.FORMAT)),
                reference=T.XVNLI_LABELS[gold],
                image_fields=({"name": _get(row, "Flikr30kID", src, self.FORMAT, (str, int))},), source=src))
        return examples, {"n_dropped_gold_dash": len(dropped), "dropped_ids": dropped}


class MaRVL(_ExactMatch):
    """MaRVL (IGLUE) and NLVR2 test for English, mBLIP protocol (eval-suite §5); two images per example.

    Reads ``marvl/zero_shot/annotations/marvl-<lang>.jsonl`` (``{caption, concept, left_img, right_img, id,
    label: bool}``; images ``<lang>/images/<concept>/<img>``, NFKD-normalised as mBLIP does for non-ASCII concept
    folders) and, for English, NLVR2 ``test.jsonl`` (``{identifier, sentence, label: "True"/"False"}``; images
    ``<identifier without its last -N>-img0.png`` / ``-img1.png`` unless the row names ``left_img`` /
    ``right_img``). ``generate`` receives ``[left, right]`` in that order. Labels True -> yes, False -> no; metric
    ``vqa_clean`` + exact match.

    Prompt: ``Based on the two images, is it correct to say "{statement}"? Yes or no?`` -- the override in mBLIP's
    ``mblip_test_marvl`` / ``mblip_finetune_marvl`` experiment configs, *without* the datamodule default's trailing
    " Answer in English:" (pass ``prompt="marvl_datamodule_default"`` for that variant; the two sources disagree on
    which one the paper used, eval-suite §5 vs protocol §9).
    """
    name = "marvl"
    images_per_example = 2
    FORMAT = "MaRVL/NLVR2 JSONL ({caption|sentence, label, left_img/right_img|identifier} per line)"

    def __init__(self, prompt: str = "marvl"):
        if prompt not in ("marvl", "marvl_datamodule_default"):
            raise ValueError(f"MaRVL prompt must be 'marvl' or 'marvl_datamodule_default', got {prompt!r}")
        self.prompt = prompt

    def options(self):
        return {"prompt": self.prompt}

    def read(self, files, lang, limit=None):
        path = Path(files["annotations"])
        examples = []
        for lineno, row in _read_jsonl(path, "MaRVL/NLVR2 file", self.name):
            if limit is not None and len(examples) >= limit:
                break
            src = (path, lineno)
            statement = row["caption"] if "caption" in row else _get(row, "sentence", src, self.FORMAT)
            label = _get(row, "label", src, self.FORMAT, (bool, str))
            if str(label) not in T.MARVL_LABELS:
                raise EvalDataError(f"{path}:{lineno}: label must be true/false or \"True\"/\"False\", got {label!r}")
            ex_id = str(row["id"]) if "id" in row else _get(row, "identifier", src, self.FORMAT)
            if "left_img" in row or "right_img" in row:
                left = _get(row, "left_img", src, self.FORMAT)
                right = _get(row, "right_img", src, self.FORMAT)
            else:  # official NLVR2: images are named after the pair identifier
                base = ex_id.rsplit("-", 1)[0]
                left, right = f"{base}-img0.png", f"{base}-img1.png"
            concept = str(row.get("concept", ""))
            examples.append(Example(
                id=ex_id, lang=lang, prompt=_prompt(self.prompt, _check_str(statement, src, "caption")),
                reference=T.MARVL_LABELS[str(label)],
                image_fields=({"name": left, "concept": concept}, {"name": right, "concept": concept}), source=src))
        return examples, {}


def _check_str(value, source, key: str) -> str:
    if not isinstance(value, str):
        raise EvalDataError(f"{_where(*source)}: {key!r} must be a string, got {value!r}")
    return value


class _Captioning(Evaluator):
    """Shared scorer: mBLIP ``caption_evaluation`` (§2, §9) through ``metrics.caption_scores``: zh/ja/th segmented
    (spaCy-equivalent), NFC, PTB tokenizer (Java CoreNLP when ``java`` is on PATH, else the pure-Python
    approximation; ``tokenizer=`` picks, metrics.json records which), pycocoevalcap ``Bleu(4)`` + ``Cider()``. CIDEr's
    IDF comes from the evaluated language's full reference set, so ``limit`` gives numbers that are not comparable."""
    task = "caption"
    headline = ("CIDEr", "Bleu_4")
    reference_key = "references"
    needs_lang = True

    def __init__(self, tokenizer: str = "auto"):
        if tokenizer not in ("auto", "ptb-java", "ptb-python"):
            raise ValueError(f"tokenizer must be 'auto', 'ptb-java' or 'ptb-python', got {tokenizer!r}")
        self.tokenizer = tokenizer

    def options(self):
        return {"tokenizer": self.tokenizer}

    def score(self, examples, predictions, lang):
        preds = {e.id: predictions[e.id] for e in examples}
        refs = {e.id: list(e.reference) for e in examples}
        s = M.caption_scores(preds, refs, lang, tokenizer=self.tokenizer)
        out = {k: s[k] for k in ("CIDEr", "Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4")}
        out.update(n=len(examples), tokenizer=s["tokenizer"], segmenter=s["segmenter"])
        return out, [{} for _ in examples]


class XM3600(_Captioning):
    """Crossmodal-3600 captioning in its 36 languages, mBLIP protocol (eval-suite §2).

    Reads the official ``captions.jsonl`` (one line per image: ``{"image/key", "<lang>": {"caption": [...]}}``; the
    raw ``caption`` field, as mBLIP), image ``<image/key>.jpg``. Prompt ``Caption in {name}: `` with the authors'
    language names, typos included ("Ukranian", "Portugese"); caption decoding; CIDEr (+BLEU) per language over
    that language's full set of 3,600 images.

    Differences: references are read from ``captions.jsonl`` directly instead of mBLIP's converted COCO-style JSON
    (same strings; segmentation and NFC are applied inside the metric, in mBLIP's order). Not comparable with
    PaLI's zh/ja/th numbers (different segmentation, §2).
    """
    name = "xm3600"
    FORMAT = "XM3600 captions.jsonl ({\"image/key\", \"<lang>\": {\"caption\": [...]}} per line)"

    def read(self, files, lang, limit=None):
        path = Path(files["annotations"])
        if lang is None:
            raise EvalDataError("xm3600: captions.jsonl holds every language; say which (lang=..., --lang)")
        prompt = _prompt("xm3600", lang)
        examples = []
        for lineno, row in _read_jsonl(path, "XM3600 captions file", self.name):
            if limit is not None and len(examples) >= limit:
                break
            src = (path, lineno)
            key = _get(row, "image/key", src, self.FORMAT)
            if lang not in row:
                raise EvalDataError(f"{path}:{lineno}: image {key} has no captions in {lang!r} "
                                    f"(languages on this line: {sorted(k for k in row if '/' not in k)})")
            caps = _str_list(row[lang], "caption", src, self.FORMAT)
            examples.append(Example(id=key, lang=lang, prompt=prompt, reference=caps,
                                    image_fields=({"name": key},), source=src))
        return examples, {}


class XFlickrCO(_Captioning):
    """xFlickr&CO as a captioning benchmark, mBLIP protocol (eval-suite §6.1); IGLUE defines it for retrieval.

    Reads ``xFlickrCO/annotations/<lang>/test.jsonl`` (``{sentences: [one caption], id, img_path}``; 1,000
    Flickr30k test + 1,000 COCO val2014 images, told apart by the ``COCO_`` file prefix) and, for English, mBLIP's
    choice: the Flickr30k test split ``flickr30k/annotations/test_ann.jsonl`` (1,000 images x 5 references), not
    ``xFlickrCO/en``. Prompt ``Caption in {German|Spanish|...}: ``; caption decoding; CIDEr (+BLEU), zh/ja
    segmented as XM3600. Example id = the row's ``id`` as a string.
    """
    name = "xflickrco"
    FORMAT = "xFlickrCO/Flickr30k JSONL ({sentences, id, img_path} per line)"

    def read(self, files, lang, limit=None):
        path = Path(files["annotations"])
        if lang is None:
            raise EvalDataError("xflickrco: say which language the file is (lang=..., --lang); tokenisation of "
                                "zh/ja depends on it")
        prompt = _prompt("xflickrco", lang)
        examples = []
        for lineno, row in _read_jsonl(path, "xFlickrCO test file", self.name):
            if limit is not None and len(examples) >= limit:
                break
            src = (path, lineno)
            img = _get(row, "img_path", src, self.FORMAT)
            examples.append(Example(
                id=str(_get(row, "id", src, self.FORMAT, (str, int))), lang=lang, prompt=prompt,
                reference=_str_list(row, "sentences", src, self.FORMAT),
                image_fields=({"name": img, "source": "coco" if img.startswith("COCO_") else "flickr"},),
                source=src))
        return examples, {}


class COCOCaptions(_Captioning):
    """COCO captions, Karpathy test split (5,000 images), mBLIP protocol (eval-suite §8.2).

    Reads Karpathy's ``dataset_coco.json`` (``images[*]`` with ``split == "test"``; references ``sentences[*].raw``;
    image ``<filepath>/<filename>``; id = ``cocoid``). Prompt ``Caption in English: ``; caption decoding; BLEU + CIDEr
    only, as mBLIP (the standard COCO table also has METEOR, ROUGE-L and SPICE; SPICE needs a download).
    """
    name = "coco"
    score_default_lang = "en"
    FORMAT = "Karpathy dataset_coco.json ({images: [{split, cocoid, filepath, filename, sentences: [{raw}]}]})"

    def read(self, files, lang, limit=None):
        path = Path(files["annotations"])
        data = _read_json(path, "Karpathy split file (dataset_coco.json)", self.name)
        images = _get(data, "images", (path, 1), self.FORMAT, list)
        prompt = _prompt("coco", "English")
        examples = []
        for i, img in enumerate(images):
            src = (path, _value_regex("cocoid", img.get("cocoid")) if isinstance(img, dict) else f"images[{i}]")
            if _get(img, "split", src, self.FORMAT) != "test":
                continue
            if limit is not None and len(examples) >= limit:
                break
            sentences = _get(img, "sentences", src, self.FORMAT, list)
            raws = [_get(s, "raw", src, self.FORMAT) for s in sentences]
            if not raws:
                raise EvalDataError(f"{_where(*src)}: image has no sentences")
            examples.append(Example(
                id=str(_get(img, "cocoid", src, self.FORMAT, int)), lang=lang or "en", prompt=prompt, reference=raws,
                image_fields=({"name": f"{_get(img, 'filepath', src, self.FORMAT)}/"
                                       f"{_get(img, 'filename', src, self.FORMAT)}"},), source=src))
        return examples, {}


class MaXM(Evaluator):
    """MaXM v1 (Changpinyo et al.), mBLIP protocol (eval-suite §6.2).

    Reads ``maxm_v1_<lang>.json`` (``{annotations: [{image_id, qa_pairs: [{question_id, question,
    processed_answers}]}]}``), images from XM3600 (``<image_id>.jpg``). Prompt ``Question: {q} Short answer in
    {Language}:`` (the answer is asked for in the question's language, unlike xGQA); short-answer decoding.
    Metric: correct iff the lower/stripped prediction equals any ``processed_answers`` entry -- no ``vqa_clean``,
    as mBLIP's ``vqa_maxm_classification_evaluation``.
    """
    name = "maxm"
    reference_key = "references"
    needs_lang = True
    FORMAT = "MaXM v1 JSON ({annotations: [{image_id, qa_pairs: [{question_id, question, processed_answers}]}]})"

    def read(self, files, lang, limit=None):
        path = Path(files["annotations"])
        if lang is None:
            raise EvalDataError("maxm: say which language the file is (lang=..., --lang)")
        data = _read_json(path, "MaXM file", self.name)
        anns = _get(data, "annotations", (path, 1), self.FORMAT, list)
        examples = []
        for ann in anns:
            image_id = ann.get("image_id") if isinstance(ann, dict) else None
            src = (path, _value_regex("image_id", image_id))
            image_id = _get(ann, "image_id", src, self.FORMAT)
            for qa in _get(ann, "qa_pairs", src, self.FORMAT, list):
                if limit is not None and len(examples) >= limit:
                    break
                qsrc = (path, _value_regex("question_id", qa.get("question_id")) if isinstance(qa, dict) else "")
                examples.append(Example(
                    id=str(_get(qa, "question_id", qsrc, self.FORMAT, (str, int))), lang=lang,
                    prompt=_prompt("maxm", _get(qa, "question", qsrc, self.FORMAT), lang),
                    reference=_str_list(qa, "processed_answers", qsrc, self.FORMAT),
                    image_fields=({"name": image_id},), source=qsrc))
        return examples, {}

    def score(self, examples, predictions, lang):
        preds = [predictions[e.id] for e in examples]
        answers = [e.reference for e in examples]
        correct = [M.maxm_accuracy([p], [a]) == 1.0 for p, a in zip(preds, answers)]
        return {"accuracy": M.maxm_accuracy(preds, answers), "n": len(examples)}, [{"correct": c} for c in correct]


class POPE(Evaluator):
    """POPE (Li et al. 2023) on COCO: random / popular / adversarial (eval-suite §7); mBLIP v2 protocol + official.

    Reads ``coco_pope_<setting>.json`` (JSONL ``{question_id, image, text, label}``), image = ``image`` under COCO
    val2014. Prompt = the question verbatim; short-answer decoding. Reports mBLIP's number, ``accuracy`` (vqa_clean +
    exact match against yes/no, ``classification_evaluation``), and the official ``evaluate.py`` metrics
    computed from the same predictions: ``pope_accuracy``, ``precision``, ``recall``, ``f1``, ``yes_ratio`` (first
    sentence, "no"/"not"/"No" -> no, else yes; positive = yes), with the counts. The "languages" of this benchmark
    are the three settings.
    """
    name = "pope"
    headline = ("accuracy", "f1")
    FORMAT = "POPE JSONL ({question_id, image, text, label: yes/no} per line)"

    def read(self, files, lang, limit=None):
        path = Path(files["annotations"])
        examples = []
        for lineno, row in _read_jsonl(path, "POPE question file", self.name):
            if limit is not None and len(examples) >= limit:
                break
            src = (path, lineno)
            label = _get(row, "label", src, self.FORMAT)
            if label.strip().lower() not in ("yes", "no"):
                raise EvalDataError(f"{path}:{lineno}: label must be 'yes' or 'no', got {label!r}")
            examples.append(Example(
                id=str(_get(row, "question_id", src, self.FORMAT, (str, int))), lang=lang,
                prompt=_prompt("pope", _get(row, "text", src, self.FORMAT)), reference=label,
                image_fields=({"name": _get(row, "image", src, self.FORMAT)},), source=src))
        return examples, {}

    def score(self, examples, predictions, lang):
        preds = [predictions[e.id] for e in examples]
        labels = [e.reference for e in examples]
        s = M.pope_scores(preds, labels)
        out = {"accuracy": s["mblip_acc"], "pope_accuracy": s["accuracy"], "precision": s["precision"],
               "recall": s["recall"], "f1": s["f1"], "yes_ratio": s["yes_ratio"],
               "tp": s["tp"], "fp": s["fp"], "tn": s["tn"], "fn": s["fn"], "n": len(examples)}
        return out, [{"correct": M.exact_match_accuracy([p], [l]) == 1.0, "pope_answer": M.pope_answer(p)}
                     for p, l in zip(preds, labels)]


_COCO_ID = re.compile(r"(\d+)\.\w+$")


class CHAIR(Evaluator):
    """CHAIR object hallucination (Rohrbach et al. 2018), mBLIP v2 protocol (eval-suite §7).

    Images: the first 1,000 (``Benchmark.limit``) of Karpathy ``dataset_coco.json`` whose split is ``val`` or
    ``restval``, in file order (mBLIP's ``coco_val.json`` takes the non-train, non-test branch of that file).
    Ground-truth objects: POPE's ``coco_ground_truth_segmentation.json`` (JSON list or JSONL of
    ``{"image": "COCO_val2014_<id>.jpg", "objects": [COCO class names]}``). Decoding: beam 5, max 256 new tokens,
    repetition penalty 1.5. The two prompts are the benchmark's "languages": ``short`` = ``Caption in English:``,
    ``long`` = ``Describe the image in English with as much detail as possible.``. Metrics ``CHAIR_s`` (captions
    with a hallucinated object) and ``CHAIR_i`` (hallucinated mentions / mentions), lower is better.

    Differences: ``metrics.chair_scores`` tokenises with a regex instead of NLTK ``word_tokenize`` (no run-time
    ``punkt`` download; object words are unaffected). Which Karpathy images mBLIP's file holds is read from the
    authors' description, not their file (eval-suite §7) [uncertain].
    """
    name = "chair"
    task = "chair"
    headline = ("CHAIR_s", "CHAIR_i")
    files = ("karpathy", "objects")
    reference_key = "objects"
    score_default_lang = "short"
    predictions_define_subset = True
    SPLITS = ("val", "restval")
    FORMAT = "POPE segmentation ({image, objects} per entry)"
    PROMPTS = {"short": "chair_short", "long": "chair_long"}

    def _objects(self, path: Path) -> dict[str, tuple[list[str], tuple[Path, int | str]]]:
        path = Path(path)
        if not path.is_file():
            raise _missing_file(path, "CHAIR ground-truth objects file (POPE coco_ground_truth_segmentation.json)",
                                self.name)
        text = path.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
            entries = [(e, (path, _value_regex("image", e.get("image")) if isinstance(e, dict) else ""))
                       for e in (data if isinstance(data, list) else [data])]
        except json.JSONDecodeError:
            entries = [(row, (path, lineno)) for lineno, row in _read_jsonl(path, "CHAIR objects file", self.name)]
        out = {}
        for entry, src in entries:
            image = _get(entry, "image", src, self.FORMAT)
            m = _COCO_ID.search(image)
            if not m:
                raise EvalDataError(f"{_where(*src)}: cannot read a COCO id from image {image!r}")
            objects = _get(entry, "objects", src, self.FORMAT, list)
            out[str(int(m.group(1)))] = (list(objects), src)
        return out

    def _prompt_for(self, lang):
        if lang not in self.PROMPTS:
            raise EvalDataError(f"chair: unknown prompt variant {lang!r}; use one of {sorted(self.PROMPTS)}")
        return _prompt(self.PROMPTS[lang], "English")

    def read(self, files, lang, limit=None):
        prompt = self._prompt_for(lang)
        objects = self._objects(files["objects"])
        path = Path(files["karpathy"])
        data = _read_json(path, "Karpathy split file (dataset_coco.json)", self.name)
        fmt = "Karpathy dataset_coco.json"
        examples = []
        for img in _get(data, "images", (path, 1), fmt, list):
            src = (path, _value_regex("cocoid", img.get("cocoid")) if isinstance(img, dict) else "")
            if _get(img, "split", src, fmt) not in self.SPLITS:
                continue
            if limit is not None and len(examples) >= limit:
                break
            cocoid = str(_get(img, "cocoid", src, fmt, int))
            if cocoid not in objects:
                raise EvalDataError(f"{_where(*src)}: COCO image {cocoid} has no ground-truth objects in "
                                    f"{files['objects']}; CHAIR needs them for every evaluated image")
            examples.append(Example(
                id=cocoid, lang=lang, prompt=prompt, reference=objects[cocoid][0],
                image_fields=({"name": f"{_get(img, 'filepath', src, fmt)}/{_get(img, 'filename', src, fmt)}"},),
                source=src))
        return examples, {}

    def references(self, path, lang):
        return [Example(id=i, lang=lang, prompt="", reference=objs, image_fields=(), source=src)
                for i, (objs, src) in self._objects(path).items()], {}

    def score(self, examples, predictions, lang):
        s = M.chair_scores({e.id: predictions[e.id] for e in examples}, {e.id: e.reference for e in examples})
        out = {k: s[k] for k in ("CHAIR_s", "CHAIR_i", "n_hallucinated_captions", "n_mentions",
                                 "n_hallucinated_mentions")}
        out["n"] = s["n_captions"]
        return out, [{"hallucinated": [w for w, _ in s["hallucinated"].get(e.id, [])]} for e in examples]


class VQAv2(Evaluator):
    """VQAv2 (auxiliary English anchor), mBLIP protocol: the first 5,000 questions of val2014 (eval-suite §8.1).

    Reads the official ``v2_OpenEnded_mscoco_val2014_questions.json`` (question order = mBLIP's subset) and
    ``v2_mscoco_val2014_annotations.json`` (10 answers per question); image ``COCO_val2014_<image_id:012d>.jpg``.
    Prompt ``Question: {q} Short answer in English:``; short-answer decoding. Metric: VQA accuracy, mean over the
    10 leave-one-out subsets of min(1, matches/3). ``mode`` picks the normalisation reported as ``accuracy``
    (default ``lavis`` = pre-2021 official scorer as used by LAVIS/BLIP-2; ``mblip`` = mBLIP's
    ``vqa_classification_evaluation``; ``official2021`` = GT-Vision-Lab HEAD); all three are reported as
    ``accuracy_<mode>``. Not test-dev: that needs the EvalAI server.
    """
    name = "vqav2"
    files = ("questions", "annotations")
    reference_key = "answers"
    score_default_lang = "en"
    predictions_define_subset = True
    MODES = ("lavis", "mblip", "official2021")

    def __init__(self, mode: str = "lavis"):
        if mode not in self.MODES:
            raise ValueError(f"VQAv2 mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode

    def options(self):
        return {"mode": self.mode}

    def _answers(self, path: Path) -> dict[str, tuple[list[str], tuple[Path, str]]]:
        path = Path(path)
        fmt = "VQA annotations ({annotations: [{question_id, answers: [{answer}]}]})"
        data = _read_json(path, "VQAv2 annotation file", self.name)
        out = {}
        for ann in _get(data, "annotations", (path, 1), fmt, list):
            src = (path, _value_regex("question_id", ann.get("question_id")) if isinstance(ann, dict) else "")
            qid = str(_get(ann, "question_id", src, fmt, int))
            answers = [_get(a, "answer", src, fmt) for a in _get(ann, "answers", src, fmt, list)]
            if not answers:
                raise EvalDataError(f"{_where(*src)}: question {qid} has no answers")
            out[qid] = (answers, src)
        return out

    def read(self, files, lang, limit=None):
        answers = self._answers(files["annotations"])
        path = Path(files["questions"])
        fmt = "VQA questions ({questions: [{question_id, image_id, question}]})"
        data = _read_json(path, "VQAv2 question file", self.name)
        examples = []
        for q in _get(data, "questions", (path, 1), fmt, list):
            if limit is not None and len(examples) >= limit:
                break
            src = (path, _value_regex("question_id", q.get("question_id")) if isinstance(q, dict) else "")
            qid = str(_get(q, "question_id", src, fmt, int))
            if qid not in answers:
                raise EvalDataError(f"{_where(*src)}: question {qid} has no entry in {files['annotations']}")
            examples.append(Example(
                id=qid, lang=lang or "en", prompt=_prompt("vqav2", _get(q, "question", src, fmt)),
                reference=answers[qid][0],
                image_fields=({"name": f"{_get(q, 'image_id', src, fmt, int):012d}"},), source=src))
        return examples, {}

    def references(self, path, lang):
        return [Example(id=qid, lang=lang, prompt="", reference=a, image_fields=(), source=src)
                for qid, (a, src) in self._answers(path).items()], {}

    def score(self, examples, predictions, lang):
        per_mode = {m: [M.vqav2_accuracy(predictions[e.id], e.reference, mode=m) for e in examples]
                    for m in self.MODES}
        out = {"accuracy": sum(per_mode[self.mode]) / len(examples), "mode": self.mode}
        out.update({f"accuracy_{m}": sum(v) / len(examples) for m, v in per_mode.items()})
        out["n"] = len(examples)
        return out, [{"accuracy": a} for a in per_mode[self.mode]]


# =====================================================================================================================
# The benchmark table: evaluator, languages, file layouts
# =====================================================================================================================

@dataclass(frozen=True)
class Layout:
    """Where a benchmark's files are, relative to a data root. Patterns are ``str.format`` strings: annotation
    patterns take ``{lang}``; image patterns take ``{lang}`` and the example's image fields (``{name}``, MaRVL
    ``{concept}``); a mapping of image patterns is keyed by the image field ``source`` (xFlickrCO: flickr/coco)."""
    annotations: Mapping[str, str]
    """File role (``Evaluator.files``) -> path pattern."""
    images: str | Mapping[str, str]
    """Image path pattern, or patterns by image source."""
    languages: tuple[str, ...] | None = None
    """Languages present in this layout, if not the benchmark's (the demo world's nine)."""
    per_lang: Mapping[str, Layout] = field(default_factory=dict)
    """Exceptions for one language (MaRVL en = NLVR2 test, xFlickrCO en = Flickr30k test)."""
    normalize: str | None = None
    """Unicode normalisation applied to relative image paths (MaRVL: NFKD, as mBLIP)."""

    def files(self, root: Path, lang: str | None) -> dict[str, Path]:
        lay = self.per_lang.get(lang, self)
        return {role: Path(root) / pattern.format(lang=lang) for role, pattern in lay.annotations.items()}

    def image(self, root: Path, lang: str | None, fields: Mapping[str, Any]) -> Path:
        lay = self.per_lang.get(lang, self)
        pattern = lay.images
        if not isinstance(pattern, str):
            pattern = pattern[fields["source"]]
        rel = pattern.format(lang=lang, **fields)
        if self.normalize:
            rel = unicodedata.normalize(self.normalize, rel)
        return Path(root) / rel


@dataclass(frozen=True)
class Benchmark:
    """One row of :data:`BENCHMARKS`."""
    name: str
    evaluator: type[Evaluator]
    languages: tuple[str, ...]
    """Default languages (POPE: settings; CHAIR: prompt variants), English first where it is part of the table."""
    layouts: Mapping[str, Layout]
    """``paper`` = official files under ``data/paper`` as `mblip fetch` lays them out; ``demo`` = the demo world."""
    averages: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: {"mean": ("en",)})
    """Average name -> languages excluded from it (``metrics.average``); empty for single-language benchmarks."""
    limit: int | None = None
    """The protocol's subset size (examples per language), if it evaluates only a prefix of the file."""


_DEMO_LANGUAGES = ("en", "de", "fr", "es", "ru", "ar", "zh", "ja", "sw")  # mblip.demo.realise.LANGUAGES

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("xgqa", XGQA, ("en", "bn", "de", "id", "ko", "pt", "ru", "zh"), {
        "paper": Layout({"annotations": "iglue/xGQA/annotations/few_shot/{lang}/test.json"}, "gqa/images/{name}.jpg"),
        "demo": Layout({"annotations": "eval/xgqa/{lang}/test.json"}, "images/{name}.png", _DEMO_LANGUAGES),
    }),
    Benchmark("xvnli", XVNLI, ("en", "ar", "es", "fr", "ru"), {
        "paper": Layout({"annotations": "iglue/XVNLI/annotations/{lang}/test.jsonl"}, "flickr30k/images/{name}.jpg"),
        "demo": Layout({"annotations": "eval/xvnli/{lang}/test.jsonl"}, "images/{name}.png", _DEMO_LANGUAGES),
    }),
    Benchmark("marvl", MaRVL, ("en", "id", "sw", "ta", "tr", "zh"), {
        "paper": Layout({"annotations": "iglue/marvl/zero_shot/annotations/marvl-{lang}.jsonl"},
                        "marvl/images/{lang}/images/{concept}/{name}", normalize="NFKD",
                        per_lang={"en": Layout({"annotations": "iglue/nlvr2/annotations/test.jsonl"},
                                               "nlvr2/images/test1/{name}")}),
        "demo": Layout({"annotations": "eval/marvl/marvl-{lang}.jsonl"}, "images/{name}", _DEMO_LANGUAGES),
    }),
    Benchmark("xflickrco", XFlickrCO, ("en", "de", "es", "id", "ja", "ru", "tr", "zh"), {
        "paper": Layout({"annotations": "iglue/xFlickrCO/annotations/{lang}/test.jsonl"},
                        {"flickr": "flickr30k/images/{name}", "coco": "coco/val2014/{name}"},
                        per_lang={"en": Layout({"annotations": "iglue/flickr30k/annotations/test_ann.jsonl"},
                                               {"flickr": "flickr30k/images/{name}", "coco": "coco/val2014/{name}"})}),
    }),
    Benchmark("xm3600", XM3600, tuple(T.XM3600_LANGUAGE_NAMES), {
        "paper": Layout({"annotations": "xm3600/captions/captions.jsonl"}, "xm3600/images/{name}.jpg"),
        "demo": Layout({"annotations": "eval/xm3600/captions.jsonl"}, "images/{name}.png", _DEMO_LANGUAGES),
    }, averages={"mean": ("en",), "mean_without_quz": ("en", "quz")}),
    Benchmark("maxm", MaXM, tuple(T.MAXM_LANGUAGE_NAMES), {
        "paper": Layout({"annotations": "maxm/maxm_v1_release/maxm_v1_{lang}.json"}, "xm3600/images/{name}.jpg"),
    }),
    Benchmark("pope", POPE, ("random", "popular", "adversarial"), {
        "paper": Layout({"annotations": "pope/coco_pope_{lang}.json"}, "coco/val2014/{name}"),
    }, averages={"mean": ()}),
    Benchmark("chair", CHAIR, ("short", "long"), {
        "paper": Layout({"karpathy": "coco/caption_datasets/dataset_coco.json",
                         "objects": "pope/coco_ground_truth_segmentation.json"}, "coco/{name}"),
    }, averages={}, limit=1000),
    Benchmark("vqav2", VQAv2, ("en",), {
        "paper": Layout({"questions": "vqav2/v2_Questions_Val_mscoco/v2_OpenEnded_mscoco_val2014_questions.json",
                         "annotations": "vqav2/v2_Annotations_Val_mscoco/v2_mscoco_val2014_annotations.json"},
                        "coco/val2014/COCO_val2014_{name}.jpg"),
    }, averages={}, limit=5000),
    Benchmark("coco", COCOCaptions, ("en",), {
        "paper": Layout({"annotations": "coco/caption_datasets/dataset_coco.json"}, "coco/{name}"),
    }, averages={}),
)}


def get_benchmark(bench: str) -> Benchmark:
    if bench not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {bench!r}; known: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[bench]


# =====================================================================================================================
# Loading, image checks, generation
# =====================================================================================================================

def _make_evaluator(spec: Benchmark, options: Mapping[str, Any] | None) -> Evaluator:
    try:
        return spec.evaluator(**dict(options or {}))
    except TypeError as e:
        raise ValueError(f"{spec.name}: bad evaluator option(s) {dict(options or {})} ({e}); see the docstring of "
                         f"mblip.evaluate.{spec.evaluator.__name__}") from None


def load_examples(bench: str, data_root: str | Path, lang: str, *, layout: str = "paper",
                  limit: int | None = None, options: Mapping[str, Any] | None = None
                  ) -> tuple[list[Example], dict]:
    """Read one language of ``bench`` from ``data_root`` with the named layout; image paths resolved, not checked.

    ``limit`` defaults to the protocol's subset (VQAv2 5,000, CHAIR 1,000); duplicate ids are an error.
    """
    spec = get_benchmark(bench)
    if layout not in spec.layouts:
        raise KeyError(f"{bench} has no layout {layout!r}; it has {', '.join(spec.layouts)}")
    lay = spec.layouts[layout]
    evaluator = _make_evaluator(spec, options)
    root = Path(data_root)
    examples, info = evaluator.read(lay.files(root, lang), lang, spec.limit if limit is None else limit)
    seen: dict[str, Example] = {}
    for ex in examples:
        if ex.id in seen:
            raise EvalDataError(f"{ex.where}: id {ex.id!r} appears twice (first at {seen[ex.id].where}); "
                                "ids must be unique per language")
        seen[ex.id] = ex
        ex.images = tuple(lay.image(root, lang, f) for f in ex.image_fields)
    return examples, info


def check_images(examples: Sequence[Example], progress: bool = True) -> int:
    """Check that every image exists and ``PIL.Image.verify`` accepts it; returns the number of distinct images.

    Raises :class:`ImageError` listing the first bad paths (and the record that needs each) -- never a silent
    substitute image.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    first_user: dict[Path, Example] = {}
    for ex in examples:
        for p in ex.images:
            first_user.setdefault(p, ex)
    bad = []
    for path, ex in tqdm(first_user.items(), desc="check images", unit="img", disable=not progress, leave=False):
        if not path.is_file():
            bad.append((path, ex, "missing"))
            continue
        try:
            with Image.open(path) as im:
                im.verify()
        except Exception as e:  # noqa: BLE001 -- any decoder error means the image cannot be used
            bad.append((path, ex, f"unreadable ({type(e).__name__}: {e})"))
    if bad:
        lines = "\n".join(f"  {p} -- {why}; needed by {ex.where}" for p, ex, why in bad[:10])
        more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise ImageError(f"{len(bad)} of {len(first_user)} images are missing or unreadable; nothing was generated:"
                         f"\n{lines}{more}\nFetch the images (`python -m mblip fetch --only <bench>`) or fix "
                         "data_root / the layout's image pattern (BENCHMARKS in mblip/evaluate.py).")
    return len(first_user)


def _generate_all(generate: Generate, examples: Sequence[Example], decoding: Decoding, batch_size: int,
                  desc: str, progress: bool) -> list[str]:
    from tqdm.auto import tqdm

    out: list[str] = []
    with tqdm(total=len(examples), desc=desc, unit="ex", disable=not progress) as bar:
        for start in range(0, len(examples), batch_size):
            batch = examples[start:start + batch_size]
            preds = generate([list(e.images) for e in batch], [e.prompt for e in batch], decoding)
            if not isinstance(preds, (list, tuple)) or len(preds) != len(batch):
                got = len(preds) if isinstance(preds, (list, tuple)) else type(preds).__name__
                raise ValueError(f"generate returned {got} outputs for a batch of {len(batch)} prompts; it must "
                                 "return one string per example")
            bad = [p for p in preds if not isinstance(p, str)]
            if bad:
                raise ValueError(f"generate must return strings, got {bad[0]!r} (decode the token ids first)")
            out.extend(preds)
            bar.update(len(batch))
    return out


# =====================================================================================================================
# run
# =====================================================================================================================

@dataclass
class EvalResult:
    """What `run` returns; the same content is in the files it wrote."""
    bench: str
    metrics: dict
    """As in metrics.json: ``per_language``, ``average``, ``decoding``, ``options``, ``info``."""
    rows: list[dict]
    """Long format ``{bench, lang, metric, value}`` (averages with lang ``mean`` / ``mean_all`` / ...)."""
    predictions_path: Path
    metrics_path: Path
    rows_path: Path


def _numeric(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _averages(spec: Benchmark, evaluator: Evaluator, per_lang: Mapping[str, dict]) -> dict:
    out: dict[str, dict] = {}
    for name, exclude in spec.averages.items():
        for metric in evaluator.headline:
            values = {l: m[metric] for l, m in per_lang.items() if _numeric(m.get(metric))}
            try:
                out.setdefault(name, {})[metric] = M.average(values, exclude=exclude)
            except ValueError:  # only excluded languages evaluated (e.g. English alone): no such average
                continue
    return out


def _rows(bench: str, per_lang: Mapping[str, dict], averages: Mapping[str, dict]) -> list[dict]:
    rows = [{"bench": bench, "lang": lang, "metric": k, "value": v}
            for lang, m in per_lang.items() for k, v in m.items() if _numeric(v)]
    for name, by_metric in averages.items():
        for metric, avg in by_metric.items():
            rows.append({"bench": bench, "lang": name, "metric": metric, "value": avg["mean"]})
            if name == "mean":
                rows.append({"bench": bench, "lang": "mean_all", "metric": metric, "value": avg["mean_all"]})
    return rows


def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def run(bench: str, generate: Generate, data_root: str | Path, out_dir: str | Path, *, layout: str = "paper",
        languages: Sequence[str] | None = None, decoding: Decoding | Mapping[str, Any] | None = None,
        batch_size: int = 8, limit: int | None = None, options: Mapping[str, Any] | None = None,
        progress: bool = True) -> EvalResult:
    """Evaluate ``generate`` on ``bench``: read every language, check every image, generate in batches, score.

    ``layout``: ``paper`` (official files under data/paper) or ``demo`` (the demo world under data/demo).
    ``languages``: default the layout's or benchmark's table. ``decoding``: overrides on top of the benchmark's
    protocol profile (:data:`DECODING`). ``limit``: examples per language (default: the protocol's subset, if
    any; smaller values are for smoke tests -- CIDEr on a subset is not comparable). ``options``: evaluator
    options (captioning ``tokenizer``, VQAv2 ``mode``, MaRVL ``prompt``). Writes predictions.jsonl, metrics.json
    and per_language.csv into ``out_dir`` (see the module docstring).
    """
    spec = get_benchmark(bench)
    if layout not in spec.layouts:
        raise KeyError(f"{bench} has no layout {layout!r}; it has {', '.join(spec.layouts)}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    lay = spec.layouts[layout]
    langs = list(languages) if languages is not None else list(lay.languages or spec.languages)
    if not langs:
        raise ValueError(f"{bench}: no languages to evaluate")
    dup = sorted({l for l in langs if langs.count(l) > 1})
    if dup:
        raise ValueError(f"{bench}: language(s) {dup} listed twice")
    evaluator = _make_evaluator(spec, options)
    dec = DECODING[evaluator.task].override(decoding)
    root = Path(data_root)

    # 1. Read every language first, so a malformed file fails before hours of generation.
    loaded = {lang: load_examples(bench, root, lang, layout=layout, limit=limit, options=options)
              for lang in langs}
    for lang, (examples, _) in loaded.items():
        if not examples:
            raise EvalDataError(f"{bench} {lang}: no examples in {lay.files(root, lang)}")
    # 2. Every image must be there and decodable before the first generate call.
    n_images = check_images([ex for examples, _ in loaded.values() for ex in examples], progress)
    log.info("%s: %d languages, %d examples, %d images; decoding %s", bench, len(langs),
             sum(len(e) for e, _ in loaded.values()), n_images, dec)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pred_path, metrics_path, rows_path = out / "predictions.jsonl", out / "metrics.json", out / "per_language.csv"
    per_lang: dict[str, dict] = {}
    # 3. Generate and score language by language; predictions are written as each language finishes.
    with pred_path.open("w", encoding="utf-8") as f:
        for i, lang in enumerate(langs, 1):
            examples, info = loaded[lang]
            t0 = time.perf_counter()
            preds = _generate_all(generate, examples, dec, batch_size, f"{bench} {lang} ({i}/{len(langs)})",
                                  progress)
            seconds = time.perf_counter() - t0
            by_id = {e.id: p for e, p in zip(examples, preds)}
            lang_metrics, extras = evaluator.score(examples, by_id, lang)
            lang_metrics.update({k: v for k, v in info.items() if not k.endswith("_ids")})
            per_lang[lang] = lang_metrics
            for ex, pred, extra in zip(examples, preds, extras):
                row = {"bench": bench, "id": ex.id, "lang": lang, "images": [_rel(p, root) for p in ex.images],
                       "prompt": ex.prompt, "prediction": pred, evaluator.reference_key: ex.reference, **extra}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            head = ", ".join(f"{k} {lang_metrics[k]:.4f}" for k in evaluator.headline if _numeric(lang_metrics.get(k)))
            log.info("%s %s: %s (%d examples, %.1f ex/s)", bench, lang, head, len(examples),
                     len(examples) / max(seconds, 1e-9))

    averages = _averages(spec, evaluator, per_lang)
    metrics = {
        "bench": bench, "protocol": (spec.evaluator.__doc__ or "").strip().splitlines()[0],
        "layout": layout, "languages": langs, "limit": spec.limit if limit is None else limit,
        "decoding": dataclasses.asdict(dec), "options": evaluator.options(), "headline": list(evaluator.headline),
        "per_language": per_lang, "average": averages,
    }
    metrics_path.write_text(json.dumps(metrics, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    rows = _rows(bench, per_lang, averages)
    with rows_path.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["bench", "lang", "metric", "value"])
        w.writeheader()
        w.writerows(rows)
    return EvalResult(bench, metrics, rows, pred_path, metrics_path, rows_path)


# =====================================================================================================================
# score: any predictions file against the official references
# =====================================================================================================================

_ID_KEYS = ("id", "questionId", "question_id", "image_id", "pairID", "identifier")
_PRED_KEYS = ("prediction", "answer", "caption", "text")


def _row_id_pred(row: Mapping, where: str) -> tuple[str | None, str]:
    pred_key = next((k for k in _PRED_KEYS if k in row), None)
    if pred_key is None:
        raise EvalDataError(f"{where}: no prediction field; expected one of {list(_PRED_KEYS)} (e.g. "
                            '{"id": ..., "prediction": ...} or a COCO result {"image_id": ..., "caption": ...})')
    pred = row[pred_key]
    if not isinstance(pred, str):
        raise EvalDataError(f"{where}: {pred_key!r} must be a string, got {pred!r}")
    id_key = next((k for k in _ID_KEYS if k in row), None)
    return (None if id_key is None else str(row[id_key])), pred


def read_predictions(path: str | Path, bench: str | None = None, lang: str | None = None
                     ) -> tuple[dict[str, str], list[str] | None]:
    """Read a predictions file: ``({id: prediction}, None)``, or ``({}, [predictions in order])`` for files without
    ids (the POPE answer format), which are matched to the references by position.

    Accepted: JSONL rows or a JSON list of objects with an id (``id``, ``questionId``, ``question_id``,
    ``image_id``, ``pairID``, ``identifier``) and a prediction (``prediction``, ``answer``, ``caption``,
    ``text``), or a JSON object ``{id: prediction}``. Rows of our predictions.jsonl carry ``lang``: with several
    languages in one file pass ``lang``. Duplicate ids are an error naming the line.
    """
    path = Path(path)
    if not path.is_file():
        raise EvalDataError(f"predictions file not found: {path}")
    text = path.read_text(encoding="utf-8")
    rows: list[tuple[str, Mapping]]
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
        rows = [(f"{path}:{n}", r) for n, r in _read_jsonl(path, "predictions file")]
    if data is not None:
        if isinstance(data, list):
            rows = [(f"{path} (entry {i})", r) for i, r in enumerate(data)]
        elif isinstance(data, dict) and not any(k in data for k in _PRED_KEYS):
            bad = [k for k, v in data.items() if not isinstance(v, str)]
            if bad:
                raise EvalDataError(f"{path}: a JSON object of predictions must map ids to strings; "
                                    f"{bad[0]!r} maps to {data[bad[0]]!r}")
            return {str(k): v for k, v in data.items()}, None
        else:  # a one-line JSONL file
            rows = [(f"{path}:1", data)]
    for where, r in rows:
        if not isinstance(r, Mapping):
            raise EvalDataError(f"{where}: expected a JSON object per prediction, got {r!r}")
        if bench is not None and "bench" in r and r["bench"] != bench:
            raise EvalDataError(f"{where}: this is a prediction for {r['bench']!r}, not {bench!r}")
    langs = sorted({str(r["lang"]) for _, r in rows if "lang" in r})
    if lang is not None and langs:
        rows = [(w, r) for w, r in rows if str(r.get("lang")) == lang]
        if not rows:
            raise EvalDataError(f"{path}: no predictions with lang {lang!r} (languages in the file: {langs})")
    elif len(langs) > 1:
        raise EvalDataError(f"{path} holds predictions for several languages {langs}; pass lang (--lang)")
    by_id: dict[str, str] = {}
    first: dict[str, str] = {}
    ordered: list[str] = []
    for where, r in rows:
        ex_id, pred = _row_id_pred(r, where)
        if ex_id is None:
            ordered.append(pred)
            continue
        if ex_id in by_id:
            raise EvalDataError(f"{where}: prediction id {ex_id!r} appears twice (first at {first[ex_id]})")
        by_id[ex_id], first[ex_id] = pred, where
    if ordered and by_id:
        raise EvalDataError(f"{path}: some predictions have an id and some do not; use one format")
    return (by_id, None) if by_id or not ordered else ({}, ordered)


def _few(ids: Sequence[str], k: int = 5) -> str:
    ids = list(ids)
    return ", ".join(repr(i) for i in ids[:k]) + (f" and {len(ids) - k} more" if len(ids) > k else "")


def score(bench: str, predictions_path: str | Path, references_path: str | Path, lang: str | None = None,
          **options) -> dict:
    """Score a predictions file against a reference file in the benchmark's official format, with the metric code
    `run` uses. ``lang`` is needed where the file does not say it and the metric depends on it (captioning:
    segmentation; XM3600: which language of captions.jsonl; MaXM). ``options`` as in `run` (e.g. ``mode``).

    Every reference must have a prediction and every prediction a reference; otherwise an error lists a few
    unmatched ids. Exceptions: VQAv2 and CHAIR, whose protocol scores a subset of a larger file, score the
    predicted ids (``n_references_unscored`` says how many were left out); XVNLI ignores predictions for the
    dropped ``-`` rows (``n_predictions_ignored``).
    """
    spec = get_benchmark(bench)
    evaluator = _make_evaluator(spec, options)
    lang = lang or evaluator.score_default_lang
    if lang is None and evaluator.needs_lang:
        raise EvalDataError(f"{bench}: pass the language of the references (lang=..., --lang); "
                            "the metric depends on it")
    examples, info = evaluator.references(Path(references_path), lang)
    by_id, ordered = read_predictions(predictions_path, bench, lang)
    result: dict[str, Any] = {"bench": bench, "lang": lang}
    if ordered is not None:
        if len(ordered) != len(examples):
            raise EvalDataError(f"{predictions_path} has {len(ordered)} predictions without ids for "
                                f"{len(examples)} references in {references_path}; without ids they are matched "
                                "by position, so the counts must agree")
        by_id = {e.id: p for e, p in zip(examples, ordered)}
    ref_ids = {e.id for e in examples}
    ignored = {i for i in info.get("dropped_ids", []) if i in by_id and i not in ref_ids}
    extra = [i for i in by_id if i not in ref_ids and i not in ignored]
    if evaluator.predictions_define_subset:
        unscored = sum(1 for e in examples if e.id not in by_id)
        examples = [e for e in examples if e.id in by_id]
        result["n_references_unscored"] = unscored
        missing: list[str] = []
    else:
        missing = [e.id for e in examples if e.id not in by_id]
    if missing or extra:
        raise EvalDataError(
            f"predictions {predictions_path} and references {references_path} do not match: "
            f"{len(missing)} references without a prediction ({_few(missing) or '-'}); "
            f"{len(extra)} predictions without a reference ({_few(extra) or '-'}). Check the ids and --lang.")
    if not examples:
        raise EvalDataError(f"no predictions in {predictions_path} match references in {references_path}")
    metrics, _ = evaluator.score(examples, by_id, lang)
    result.update(metrics)
    result.update({k: v for k, v in info.items() if not k.endswith("_ids")})
    if ignored:
        result["n_predictions_ignored"] = len(ignored)
    result.update(predictions=str(predictions_path), references=str(references_path), options=evaluator.options())
    return result


# =====================================================================================================================
# Command line: `score`
# =====================================================================================================================

def _parse_options(items: Sequence[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--option takes KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def cmd_score(args) -> None:
    try:
        result = score(args.bench, args.predictions, args.references, lang=args.lang,
                       **_parse_options(args.option))
    except (EvalDataError, ValueError, KeyError, FileNotFoundError) as e:
        sys.exit(f"error: {e.args[0] if e.args else e}")
    print(json.dumps(result, indent=1, ensure_ascii=False))


def add_score_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``score BENCH --predictions P --references R [--lang L] [--option K=V]`` to an argparse subparsers."""
    s = subparsers.add_parser(
        "score", help="score a predictions file against a benchmark's official reference file; prints JSON",
        description=score.__doc__)
    s.add_argument("bench", choices=list(BENCHMARKS))
    s.add_argument("--predictions", required=True, help="JSONL/JSON predictions (ours, or the official format)")
    s.add_argument("--references", required=True, help="the benchmark's reference file for one language")
    s.add_argument("--lang", help="language of the references (needed for captioning and MaXM)")
    s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="evaluator option, e.g. mode=mblip (vqav2), tokenizer=ptb-python (captioning)")
    s.set_defaults(func=cmd_score)
    return s


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m mblip.evaluate score ...``."""
    p = argparse.ArgumentParser(prog="python -m mblip.evaluate", description="mBLIP benchmark scoring")
    sub = p.add_subparsers(dest="command", required=True)
    add_score_parser(sub)
    args = p.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
