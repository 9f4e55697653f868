"""The instruction task mix: English task builders + language assignment + translation -> one record per example.

Every record of the mix has the same schema (JSONL, one shard file per task, ``artifacts/taskmix/<split>/``)::

    {"id": "train-000000-vqa0", "image": "images/train-000000.png", "lang": "de", "task": "vqa",
     "prompt": "Give a short answer in German to the following question. Welche Form hat die Figur?",
     "target": "Quadrat"}

``image`` is relative to the data folder (``data/<source>/``). `validate_jsonl` checks a file of such records
line by line (the user's own data of `mblip.own.finetune_own`). The paper's rules (protocol §6.3, §7), applied the
same way to the demo world's English annotations and to the paper's English sources:

* each task file gets its own language assignment (seeded shuffle + contiguous mC4 slices, `mblip.languages`);
  VQG uses a second shuffle, so that answering and generating a question rarely share a language;
* captions: the caption is machine-translated; the instruction cycles per language through the language-named
  templates and the machine-translated English templates (`templates.caption_template_cycle`);
* VQA: the question is translated; the answer is translated for about half of the eligible non-English examples
  through a back-translation-filtered label dictionary (`templates.vqa_answer_language`), otherwise it stays
  English and the prompt asks for an English answer; VQG likewise, with the question as the target;
* caption matching: the caption is translated, template and yes/no answer stay English;
* classification / verification (ImageNet analogues): the label comes from a human label table in the target
  language (Babel-ImageNet in the paper; the demo world's realisers here), templates stay English;
* detailed description (LLaVA detail analogue): instruction and answer are translated.

``taskmix.translated: false`` gives the English-only ablation: the same examples, all in English.
The demo's describe instructions are our own (the paper takes LLaVA's), listed in `DESCRIBE_INSTRUCTIONS`.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from mblip import languages as L
from mblip import templates as T
from mblip.metrics import _base_language

# LLaVA-detail-style instructions for the demo's detailed-description task (our wording).
DESCRIBE_INSTRUCTIONS = (
    "Describe the image in detail.",
    "What is in this picture? Describe every object.",
    "Give a detailed description of the image.",
    "Explain what the image shows, object by object.",
)

# Salt per task for the language-assignment shuffle: different tasks get different shuffles (the authors
# shuffle each file separately), VQG explicitly differs from VQA.
_ASSIGN_SALT = {"caption": 0, "vqa": 1, "vqg": 2, "match": 3, "classify": 4, "verify": 5, "describe": 6}


@dataclass(frozen=True)
class Request:
    """One string to machine-translate."""
    text: str
    lang: str  # our language code; the translator gets languages.get(lang).nllb


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{i}: not valid JSON ({e.msg})") from None
    return rows


# The record schema of the mix (module doc), which is also what `mblip.own.finetune_own` reads from a user's files.
RECORD_KEYS: tuple[str, ...] = ("id", "image", "lang", "task", "prompt", "target")


class RecordError(ValueError):
    """A JSONL file that does not follow the record schema; the message names the file, the line and the key."""


def resolve_image(image: str, roots: Sequence[Path]) -> Path | None:
    """The file a record's ``image`` names: an absolute path as it is, a relative one under the first of ``roots``
    that has it; None if there is no such file."""
    p = Path(image)
    if p.is_absolute():
        return p if p.is_file() else None
    return next((Path(r) / p for r in roots if (Path(r) / p).is_file()), None)


def validate_jsonl(path: str | Path, image_roots: Sequence[Path] | None = None) -> list[dict]:
    """Read a JSONL file of task-mix records ``{id, image, lang, task, prompt, target}`` (every value a non-empty
    string; other keys are kept) and check every line before anything trains on it.

    A blank line is skipped. Anything else that does not fit raises `RecordError` naming the file, the line number
    and the key: a line that is not UTF-8 or not JSON, a JSON value that is not an object, a missing key, a value
    that is not a non-empty string, a ``lang`` that is no ISO 639 code ("de", "zh-Hant"; not the country code "jp"),
    and, with ``image_roots``, an image that is no file (see `resolve_image`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected JSONL records with keys {', '.join(RECORD_KEYS)})")
    rows = []
    with open(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            where = f"{path}, line {i}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise RecordError(f"{where}: not UTF-8 ({e.reason} at byte {e.start})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise RecordError(f"{where}: not valid JSON ({e.msg}, column {e.colno})") from None
            if not isinstance(row, dict):
                raise RecordError(f"{where}: expected a JSON object with keys {', '.join(RECORD_KEYS)}, "
                                  f"got a {type(row).__name__}")
            missing = [k for k in RECORD_KEYS if k not in row]
            if missing:
                raise RecordError(f"{where}: missing key{'s' if len(missing) > 1 else ''} "
                                  f"{', '.join(repr(k) for k in missing)} (a record has {', '.join(RECORD_KEYS)})")
            for k in RECORD_KEYS:
                if not isinstance(row[k], str) or not row[k].strip():
                    raise RecordError(f"{where}: key {k!r} must be a non-empty string, got {row[k]!r}")
            try:
                _base_language(row["lang"])
            except ValueError as e:
                raise RecordError(f"{where}: key 'lang': {e}") from None
            if image_roots is not None and resolve_image(row["image"], image_roots) is None:
                looked = "" if Path(row["image"]).is_absolute() else f" (looked under {', '.join(map(str, image_roots))})"
                raise RecordError(f"{where}: key 'image': no file {row['image']!r}{looked}")
            rows.append(row)
    if not rows:
        raise RecordError(f"{path}: no records (the file is empty)")
    return rows


def load_english(data_dir: Path, split: str, tasks: Iterable[str]) -> dict[str, list[dict]]:
    """The English annotation files of the task mix (``annotations/<split>/<task>.jsonl``)."""
    out = {}
    for task in tasks:
        path = Path(data_dir) / "annotations" / split / f"{task}.jsonl"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: the task mix lists '{task}' but fetch did not write it "
                                    f"(run `mblip fetch`, or remove it from taskmix.tasks)")
        out[task] = read_jsonl(path)
    return out


def assign(task: str, n: int, langs: list[str] | None, assignment: str, temperature: float, seed: int,
           translated: bool) -> list[str | None]:
    if not translated:
        return ["en"] * n
    return L.assign(n, langs, assignment=assignment, temperature=temperature, seed=seed + 1000 * _ASSIGN_SALT[task])


def _answers_in(rows: list[dict]) -> set[str]:
    return {r["en"]["answer"] for r in rows}


def plan_requests(english: dict[str, list[dict]], assigned: dict[str, list[str | None]]) -> list[Request]:
    """Every string the mix needs translated, deduplicated, in a stable order."""
    reqs: dict[Request, None] = {}

    def add(text, lang):
        if lang not in (None, "en"):
            reqs.setdefault(Request(text, lang), None)

    used_langs = sorted({l for ls in assigned.values() for l in ls if l not in (None, "en")})
    for task, rows in english.items():
        for row, lang in zip(rows, assigned[task]):
            f = row["en"]
            if task in ("caption", "match"):
                add(f["caption"], lang)
            elif task in ("vqa", "vqg"):
                add(f["question"], lang)
            elif task == "describe":
                add(f["description"], lang)
    for lang in used_langs:
        if "caption" in english:
            for t in T.CAPTION_TEMPLATES_EN:
                add(t, lang)
        if "describe" in english:
            for t in DESCRIBE_INSTRUCTIONS:
                add(t, lang)
        for task in ("vqa", "vqg"):
            if task in english:
                for a in sorted(_answers_in(english[task])):
                    add(a, lang)
    return list(reqs)


def label_dictionary(answers: Iterable[str], lang: str, tr: Callable[[str, str], str],
                     back: Callable[[str, str], str] | None) -> dict[str, str]:
    """VQA answer dictionary of one language: translation kept only if it back-translates to the English answer
    (case-insensitive) — the authors' filter on their Google-translated labels (protocol §7). With ``back=None``
    every translation is kept."""
    out = {}
    for a in answers:
        t = tr(a, lang)
        if back is None or back(t, lang).strip().lower() == a.strip().lower():
            out[a] = t
    return out


def build(english: dict[str, list[dict]], assigned: dict[str, list[str | None]], tr: Callable[[str, str], str],
          labels: dict[str, dict[str, str]], seed: int) -> list[dict]:
    """The task mix records. ``tr(text, lang)`` returns the translation (identity for English);
    ``labels[lang]`` is the VQA answer dictionary of each language."""
    out: list[dict] = []
    rng = random.Random(seed)  # one stream for template choices and the answer rule, as the authors

    def rec(row, lang, task, prompt, target):
        out.append({"id": row["id"], "image": row["image"], "lang": lang, "task": task,
                    "prompt": prompt, "target": target})

    for task, rows in english.items():
        langs = assigned[task]
        if task == "caption":
            live = [(r, l) for r, l in zip(rows, langs) if l is not None]
            translated_templates = {l: [tr(t, l) for t in T.CAPTION_TEMPLATES_EN] for l in {l for _, l in live} if l != "en"}
            prompts = T.caption_template_cycle([l for _, l in live], translated_templates)
            for (r, l), p in zip(live, prompts):
                rec(r, l, task, p, tr(r["en"]["caption"], l))
            continue
        for r, l in zip(rows, langs):
            if l is None:  # dropped by flooring, as the authors
                continue
            f = r["en"]
            if task == "vqa":
                prompt, target = T.vqa_example(tr(f["question"], l), l, f["answer"], labels.get(l), rng)
            elif task == "vqg":
                prompt, target = T.vqg_example(tr(f["question"], l), l, f["answer"], labels.get(l), rng)
            elif task == "match":
                template, yes, no = rng.choice(T.MATCHING_TEMPLATES)
                prompt, target = template.format(tr(f["caption"], l)), (yes if f["label"] == "yes" else no)
            elif task == "classify":
                label = f["label"] if l == "en" else r["gold"][l]["label"]
                prompt, target = rng.choice(T.IMAGENET_TEMPLATES).format(L.get(l).name), label
            elif task == "verify":
                obj = f["object"] if l == "en" else r["gold"][l]["object"]
                template, yes, no = rng.choice(T.IMAGENET_DECIDE_TEMPLATES)
                prompt, target = template.format(obj), (yes if f["label"] == "yes" else no)
            elif task == "describe":
                prompt, target = tr(rng.choice(DESCRIBE_INSTRUCTIONS), l), tr(f["description"], l)
            else:
                raise ValueError(f"no demo builder for task {task!r}")
            rec(r, l, task, prompt, target)
    return out


def counts(records: Iterable[dict]) -> dict[str, dict[str, int]]:
    """{task: {lang: n}} — the task mix's DVC metric."""
    c: dict[str, Counter] = {}
    for r in records:
        c.setdefault(r["task"], Counter())[r["lang"]] += 1
    return {t: dict(sorted(v.items())) for t, v in sorted(c.items())}


def write(records: list[dict], out_dir: Path) -> dict[str, int]:
    """One JSONL shard per task (deterministic order and bytes)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_task: dict[str, list[dict]] = {}
    for r in records:
        by_task.setdefault(r["task"], []).append(r)
    for task, rows in sorted(by_task.items()):
        with open(out_dir / f"{task}.jsonl", "w", encoding="utf-8", newline="\n") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")
    return {t: len(v) for t, v in by_task.items()}
