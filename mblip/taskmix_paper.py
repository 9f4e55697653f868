"""The paper's task mix from its official English sources, and the authors' released mix as a shortcut.

Two ways to the paper-scale mix (protocol §6, §7):

1. **From the English sources** (what the authors translated). One reader per source turns the source's official
   format into the English annotation records the demo uses, ``{"id", "image", "task", "en": {fields}}``, so
   `mblip.taskmix` assigns languages, translates and applies the templates exactly as for the demo world::

       english, coverage = build_paper_english("data/paper", PAPER_TASKS)
       assigned = assign_paper(english, langs=None, assignment="mc4", temperature=1.0, seed=42, translated=True)
       requests = plan_paper_requests(english, assigned)          # -> the translate stage
       records = build_paper(english, assigned, tr, labels, seed=42)
       taskmix.write(records, "artifacts/taskmix/train")

2. **From the authors' released mix** (``Gregor/mblip-train`` ``task_mix_v2_mt.json``), already translated:
   :func:`convert_released` streams it into the same record schema ``{id, image, lang, task, prompt, target}``.

Fields of ``en`` per task (``mblip.demo.annotate.TASK_FIELDS`` where the demo has the task)::

    caption       caption                        Web CapFilt, COCO Karpathy train
    vqa, vqg      question, answer               VQAv2 train (multiple_choice_answer)
    match         caption, label (yes/no)        Web CapFilt [1000:601000] with hard or random negatives
    classify      label         (+ gold)         ImageNet train + Babel-ImageNet
    verify        object, label (+ gold)         ImageNet train + Babel-ImageNet
    describe      instruction, description       LLaVA detail_23k
    conversation  instruction, answer            LLaVA conversation_58k, one record per turn
    cot, explain  question, answer, rationale    A-OKVQA v1.0 train, one record per rationale, English only

ImageNet records also carry ``"lang"`` (the authors give every (language, class) pair its own image instead of
assigning languages by mC4 share) and ``"gold": {lang: {fields}}`` (the class name from the human label table),
which is what `taskmix.build` reads for classify/verify. A-OKVQA records carry ``"lang": "en"``.

Images. Every reader resolves image paths relative to the data root (``image`` is relative, as in the demo) and
checks each image once (exists; ``PIL.Image.verify``; a reduced-scale decode, which catches truncated JPEGs that
``verify`` passes): :class:`ImageChecker`, cached in memory and optionally in SQLite. A missing or unreadable
image leaves its records out of the mix; every source reports how many (:class:`SourceReport`, one log line). The
authors' loader silently fed a black image instead (protocol §5); we never do.

Where this departs from the authors' scripts (each also noted at its reader):

* CapFilt and COCO captions form one ``caption`` task here, so one language-assignment shuffle covers both files
  (the authors shuffled each file separately); per-language counts differ by flooring only.
* LLaVA and A-OKVQA use COCO-2017 image ids; the authors map them to ``train2014`` file names. An image that is not
  in train2014 (it is a val2014 image, where the Karpathy test, POPE and CHAIR images live) is left out and counted
  as ``not in train2014`` -- the authors' own rule for A-OKVQA; their LLaVA files kept such rows with a file that
  does not exist (a black image at training time).
* ImageNet: synset folders are listed in sorted order (the authors used unsorted ``os.listdir``); languages are
  walked in our table's order (theirs: the mT5 list), restricted to our 96 languages; a "random" negative class is
  never the shown class (theirs could be); prompts name Hebrew "former Hebrew" (`mblip.languages`; their ImageNet
  script said "Hebrew").
* Caption matching without the authors' negatives file: negatives are random captions of the same slice (theirs:
  uniformly one of a random caption or CLIP-retrieved captions at ranks 3/10/30/100/300, which needs OpenCLIP +
  FAISS). With their ``..._en_raw.json`` (``label`` yes/no, ``context`` the caption shown) the negatives are theirs.

Nothing here does I/O at import time.
"""
from __future__ import annotations

import json
import logging
import random
import re
import sqlite3
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

from mblip import languages as L
from mblip import taskmix as M
from mblip import templates as T

__all__ = [
    "PAPER_TASKS", "ENGLISH_ONLY_TASKS", "TASK_FIELDS", "PATHS", "TASK_SOURCES", "PROTOCOL_COUNTS",
    "PaperDataError", "ImageChecker", "SourceReport", "iter_json_rows",
    "read_webcapfilt", "read_coco_karpathy", "read_vqav2", "read_aokvqa", "read_llava", "split_conversation",
    "read_imagenet", "plan_imagenet", "read_matching", "match_examples",
    "build_paper_english", "coverage_markdown", "assign_paper", "plan_paper_requests", "build_paper",
    "TemplateMatcher", "iter_released", "convert_released",
]

log = logging.getLogger(__name__)

PAPER_TASKS: tuple[str, ...] = ("caption", "vqa", "vqg", "match", "classify", "verify", "describe", "conversation",
                                "cot", "explain")
ENGLISH_ONLY_TASKS: tuple[str, ...] = ("cot", "explain")  # A-OKVQA is never translated (protocol §6 rows 5-6)

TASK_FIELDS: dict[str, tuple[str, ...]] = {
    "caption": ("caption",), "vqa": ("question", "answer"), "vqg": ("question", "answer"),
    "match": ("caption", "label"), "classify": ("label",), "verify": ("object", "label"),
    "describe": ("instruction", "description"), "conversation": ("instruction", "answer"),
    "cot": ("question", "answer", "rationale"), "explain": ("question", "answer", "rationale"),
}

# Default locations under the data root (data/paper), as `mblip fetch` lays them out (mblip/sources.py).
PATHS: dict[str, str] = {
    "webcapfilt": "mblip-train/blip_captions/ccs_synthetic_filtered_large_2273005_raw.json",
    "webcapfilt_images": "webcapfilt/images",  # download.download_images(capfilt_url_list(...), here)
    "match_negatives": "mblip-train/blip_captions/ccs_synthetic_match_1000-601000_en_raw.json",  # optional
    "coco_karpathy": "coco/caption_datasets/dataset_coco.json",
    "coco": "coco",  # Karpathy's filepath (train2014/val2014) is relative to this
    "vqav2_questions": "vqav2/v2_Questions_Train_mscoco/v2_OpenEnded_mscoco_train2014_questions.json",
    "vqav2_annotations": "vqav2/v2_Annotations_Train_mscoco/v2_mscoco_train2014_annotations.json",
    "aokvqa": "aokvqa/aokvqa_v1p0/aokvqa_v1p0_train.json",
    "llava_detail": "llava/detail_23k.json",
    "llava_conversation": "llava/conversation_58k.json",
    "imagenet_images": "imagenet/train",
    "imagenet_labels": "imagenet/babel_imagenet-298.json",
    "imagenet_english": "imagenet/LOC_synset_mapping.txt",  # or a JSON list of the 1000 English class names
    "released": "mblip-train/task_mix_v2_mt.json",
    "caption_templates": "mblip-train/mscoco/caption_templates.json",  # optional, for convert_released
}

# Which sources feed which task (a task listed by the user pulls in its sources). Sources are read in the order of
# the authors' merge_train.py (protocol §6 table), so the caption task lists Web CapFilt before COCO.
SOURCE_ORDER: tuple[str, ...] = ("webcapfilt", "coco", "llava-detail", "llava-conversation", "aokvqa", "vqav2",
                                 "match", "imagenet")
TASK_SOURCES: dict[str, tuple[str, ...]] = {
    "caption": ("webcapfilt", "coco"), "vqa": ("vqav2",), "vqg": ("vqav2",), "match": ("match",),
    "classify": ("imagenet",), "verify": ("imagenet",), "describe": ("llava-detail",),
    "conversation": ("llava-conversation",), "cot": ("aokvqa",), "explain": ("aokvqa",),
}

# What the official files should hold (protocol §6.1): (unit, count). Shown beside ours in the coverage summary.
PROTOCOL_COUNTS: dict[str, tuple[str, int]] = {
    "webcapfilt": ("captions", 2_273_005), "coco": ("captions", 414_113), "vqav2": ("questions", 443_757),
    "llava-detail": ("examples", 23_240), "aokvqa": ("questions", 17_056), "match": ("examples", 600_000),
}

FETCH_HINT: dict[str, str] = {
    "webcapfilt": "`mblip fetch --only webcapfilt-images` (the authors' sample with image names), then "
                  "`mblip.download.download_images(capfilt_url_list(that file), data/paper/webcapfilt/images)`",
    "coco": "`mblip fetch --only coco-karpathy coco-train2014`",
    "vqav2": "`mblip fetch --only vqav2-questions-train vqav2-annotations-train`",
    "aokvqa": "`mblip fetch --only aokvqa`",
    "llava-detail": "`mblip fetch --only llava-detail`",
    "llava-conversation": "`mblip fetch --only llava-conversation`",
    "imagenet": "`mblip fetch --only babel-imagenet-labels` and put ILSVRC2012 train at data/paper/imagenet/train",
    "match": "download the authors' ccs_synthetic_match_1000-601000_en_raw.json from Gregor/mblip-train, or read "
             "Web CapFilt first (random negatives)",
    "released": "`mblip fetch --only taskmix-released`",
}


class PaperDataError(ValueError):
    """A source file that is not in the official format; the message names the file, the row and the fix."""


# =====================================================================================================================
# Reading JSON: whole files, and large JSON lists one row at a time
# =====================================================================================================================

def _missing_file(path: Path, source: str) -> FileNotFoundError:
    return FileNotFoundError(f"{path} is missing ({source}); get it with {FETCH_HINT.get(source, '`mblip fetch`')}, "
                             f"or pass its path")


def _load_json(path: Path, source: str):
    if not path.is_file():
        raise _missing_file(path, source)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise PaperDataError(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg}); the file is damaged or not the "
                             f"official one: delete it and fetch it again ({FETCH_HINT.get(source, 'mblip fetch')})"
                             ) from None


def iter_json_rows(path: str | Path, chunk_chars: int = 1 << 20) -> Iterator[tuple[int, int, object]]:
    """``(index, line, value)`` for every element of a top-level JSON list (or every line of a ``.jsonl`` file),
    holding one chunk of text and one element in memory at a time.

    No ijson here: the list is cut into elements with ``json.JSONDecoder.raw_decode`` on a sliding text buffer
    (``chunk_chars`` characters are read at a time; a value that runs past the buffer's end is retried with more
    text). ``line`` is the 1-based line where the element starts. Errors name the file, line and element index.
    """
    path = Path(path)
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            index = 0
            for lineno, text in enumerate(f, 1):
                if not text.strip():
                    continue
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as e:
                    raise PaperDataError(f"{path}:{lineno}: row {index} is not valid JSON ({e.msg}); fix or delete "
                                         "that line") from None
                yield index, lineno, value
                index += 1
        return
    yield from _iter_json_array(path, chunk_chars)


_WS = re.compile(r"[ \t\r\n]*")


def _iter_json_array(path: Path, chunk_chars: int) -> Iterator[tuple[int, int, object]]:
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8") as f:
        buf, pos, eof = "", 0, False
        line, counted = 1, 0  # line number at buffer offset `counted`

        def more() -> bool:
            nonlocal buf, pos, counted, eof
            chunk = f.read(chunk_chars)
            if not chunk:
                eof = True
                return False
            if pos > len(buf) // 2:  # drop consumed text, keep line numbers right
                advance(pos)
                buf, counted, pos = buf[pos:], counted - pos, 0
            buf += chunk
            return True

        def advance(to: int) -> None:
            nonlocal line, counted
            if to > counted:
                line += buf.count("\n", counted, to)
                counted = to

        def skip_ws() -> bool:  # False at end of file
            nonlocal pos
            while True:
                pos = _WS.match(buf, pos).end()
                if pos < len(buf):
                    return True
                if not more():
                    return False

        def fail(msg: str, at: int):
            advance(at)
            raise PaperDataError(f"{path}:{line}: {msg}; the file is damaged or not the official one "
                                 "(a JSON list of objects): fetch it again")

        if not skip_ws() or buf[pos] != "[":
            fail("expected a JSON list ('[' ...)", pos)
        pos += 1
        index = 0
        if not skip_ws():
            fail("the list is not closed (file truncated?)", pos)
        if buf[pos] == "]":
            return
        while True:
            if not skip_ws():
                fail(f"the list ends after row {index - 1} without ']' (file truncated?)", pos)
            while True:
                try:
                    value, end = decoder.raw_decode(buf, pos)
                    if end < len(buf) or eof:  # a number at the buffer's end might continue in the next chunk
                        break
                    if not more():
                        break
                except json.JSONDecodeError as e:
                    if eof or not more():
                        fail(f"row {index} is not valid JSON ({e.msg})", e.pos)
            advance(pos)
            yield index, line, value
            index += 1
            pos = end
            if not skip_ws():
                fail(f"the list ends after row {index - 1} without ']' (file truncated?)", pos)
            if buf[pos] == "]":
                return
            if buf[pos] != ",":
                fail(f"expected ',' or ']' after row {index - 1}, got {buf[pos]!r}", pos)
            pos += 1


def _where(path: Path, index: int, line: int | None = None) -> str:
    return f"{path}:{line}: row {index}" if line is not None else f"{path}: row {index}"


def _need(row, key: str, where: str, fmt: str):
    """``row[key]``, or an error naming the row, the key and the format expected."""
    if not isinstance(row, dict):
        raise PaperDataError(f"{where}: expected an object, got {type(row).__name__}. Expected format: {fmt}")
    if row.get(key) is None:
        raise PaperDataError(f"{where}: missing key {key!r} (has {sorted(row)}). Expected format: {fmt}. "
                             "Is this the official file? Fetch it again or fix that row")
    return row[key]


def _need_str(row, key: str, where: str, fmt: str) -> str:
    v = _need(row, key, where, fmt)
    if not isinstance(v, str) or not v.strip():
        raise PaperDataError(f"{where}: {key!r} must be a non-empty string, got {v!r}. Expected format: {fmt}")
    return v


# =====================================================================================================================
# Image checks
# =====================================================================================================================

def probe_image(path: Path) -> str | None:
    """None if ``path`` is a readable image, else ``"missing"`` or ``"unreadable (...)"``.

    ``PIL.Image.verify`` checks structure (PNG CRCs) but not JPEG data, so a reduced-scale decode follows
    (``draft``: 1/8 scale for JPEG, still reading the whole stream), which catches truncated files.
    """
    from PIL import Image

    if not path.is_file():
        return "missing"
    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            im.draft(None, (1, 1))
            im.load()
    except Exception as e:  # noqa: BLE001 - any decoder error means: not an image we can train on
        return f"unreadable ({type(e).__name__}: {e})"
    return None


class ImageChecker:
    """Checks images under ``root`` once each (:func:`probe_image`), in parallel, cached.

    The cache is a dict in memory and, with ``cache``, an SQLite file keyed by relative path and invalidated when
    the file's size or mtime changes -- a rerun over millions of images only stats them. Keep the cache outside
    the DVC-tracked data folder (e.g. ``artifacts/image_checks.sqlite``).
    """

    def __init__(self, root: str | Path, cache: str | Path | None = None, workers: int = 8, progress: bool = True):
        self.root = Path(root)
        self.workers = workers
        self.progress = progress
        self._memo: dict[str, str | None] = {}
        self._db = None
        if cache is not None:
            Path(cache).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(cache))
            self._db.execute("CREATE TABLE IF NOT EXISTS checks (path TEXT PRIMARY KEY, size INTEGER, "
                             "mtime INTEGER, status TEXT)")

    def _stat(self, rel: str) -> tuple[int, int] | None:
        try:
            st = (self.root / rel).stat()
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    def check(self, rels: Iterable[str], desc: str = "check images") -> dict[str, str | None]:
        """Status of each relative path: None = readable, else the reason."""
        from PIL import ImageFile
        from tqdm.auto import tqdm

        rels = list(dict.fromkeys(rels))
        out = {r: self._memo[r] for r in rels if r in self._memo}
        todo = [r for r in rels if r not in out]
        stats = {}
        if self._db is not None and todo:
            left = []
            for r in todo:
                st = stats[r] = self._stat(r)
                row = self._db.execute("SELECT size, mtime, status FROM checks WHERE path = ?", (r,)).fetchone()
                if st is not None and row is not None and (row[0], row[1]) == st:
                    out[r] = self._memo[r] = row[2] or None
                else:
                    left.append(r)
            todo = left
        if todo:
            # Truncated files must fail the check even if a training loader switched this global on.
            saved, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
            try:
                with ThreadPoolExecutor(self.workers) as pool:
                    bar = tqdm(zip(todo, pool.map(lambda r: probe_image(self.root / r), todo)), total=len(todo),
                               desc=desc, unit="img", disable=not self.progress, leave=False)
                    for r, status in bar:
                        out[r] = self._memo[r] = status
            finally:
                ImageFile.LOAD_TRUNCATED_IMAGES = saved
            if self._db is not None:
                rows = [(r, *(stats.get(r) or self._stat(r) or (-1, -1)), out[r] or "") for r in todo]
                self._db.executemany("INSERT OR REPLACE INTO checks VALUES (?, ?, ?, ?)", rows)
                self._db.commit()
        return out


# =====================================================================================================================
# Per-source report
# =====================================================================================================================

@dataclass
class SourceReport:
    """What one reader did: rows read, records kept, images left out (with reasons), rows the protocol filters."""
    source: str
    files: list[str]
    rows: int = 0
    """Items read from the official file(s) (captions' images, questions, conversations, ...)."""
    records: dict[str, int] = field(default_factory=dict)
    """English records kept, per task."""
    images_missing: int = 0
    images_unreadable: int = 0
    records_dropped: int = 0
    """Records left out because their image is missing or unreadable."""
    bad_images: list[tuple[str, str]] = field(default_factory=list)
    """The first few (path, reason)."""
    filtered: Counter = field(default_factory=Counter)
    """Protocol filters: reason -> count (the unit is in the reason)."""

    def to_dict(self) -> dict:
        d = {"source": self.source, "files": self.files, "rows": self.rows, "records": dict(self.records),
             "images_missing": self.images_missing, "images_unreadable": self.images_unreadable,
             "records_dropped_for_images": self.records_dropped, "bad_images": [list(b) for b in self.bad_images],
             "filtered": dict(sorted(self.filtered.items()))}
        if self.source in PROTOCOL_COUNTS:
            unit, n = PROTOCOL_COUNTS[self.source]
            d["protocol_rows"] = {"unit": unit, "count": n}
        return d

    def line(self) -> str:
        recs = ", ".join(f"{n:,} {t}" for t, n in self.records.items()) or "no records"
        filt = "; ".join(f"{n:,} {why}" for why, n in sorted(self.filtered.items()))
        return (f"{self.source}: {recs} from {self.rows:,} rows; images left out: {self.images_missing:,} missing, "
                f"{self.images_unreadable:,} unreadable ({self.records_dropped:,} records)"
                + (f"; filtered: {filt}" if filt else ""))


def _keep_readable(records: list[dict], checker: ImageChecker, report: SourceReport,
                   reclassify: Callable[[str], str | None] | None = None) -> list[dict]:
    """Records whose image is readable; the others are counted in ``report`` (never replaced).

    ``reclassify(path)`` may turn a missing image into a protocol filter reason (e.g. "not in train2014").
    """
    status = checker.check((r["image"] for r in records), desc=f"{report.source} images")
    reason = {}
    for path, s in status.items():
        if s is None:
            continue
        why = reclassify(path) if (reclassify and s == "missing") else None
        reason[path] = why
        if why is None:
            if s == "missing":
                report.images_missing += 1
            else:
                report.images_unreadable += 1
            if len(report.bad_images) < 10:
                report.bad_images.append((path, s))
    kept = []
    for r in records:
        if status[r["image"]] is None:
            kept.append(r)
        elif reason[r["image"]] is not None:
            report.filtered[reason[r["image"]]] += 1
        else:
            report.records_dropped += 1
    return kept


def _finish(report: SourceReport, by_task: dict[str, list[dict]]) -> None:
    report.records = {t: len(v) for t, v in by_task.items()}
    log.info("%s", report.line())


def _coco_train2014(image_id, where: str) -> str:
    try:
        return f"COCO_train2014_{int(image_id):012d}.jpg"
    except (TypeError, ValueError):
        raise PaperDataError(f"{where}: image id {image_id!r} is not a COCO image number") from None


def _not_in_train2014(data_root: Path, coco: str) -> Callable[[str], str | None]:
    """A missing train2014 image that exists in val2014 is the protocol's filter, not a broken download."""
    def why(path: str) -> str | None:
        name = Path(path).name.replace("COCO_train2014_", "COCO_val2014_")
        if (data_root / coco / "val2014" / name).is_file():
            return "records whose image is not in train2014 (a val2014 image)"
        return None
    return why


# =====================================================================================================================
# Readers, one per source
# =====================================================================================================================

BACKSLASH = "\\"
CAPFILT_FORMAT = ('a JSON list of {"caption", "jpg" (the authors\' download name, e.g. "./images/00000000.jpg") '
                  'or "image" (path under the image folder), "url"}')


def read_webcapfilt(data_root: str | Path, checker: ImageChecker, *, path: str = PATHS["webcapfilt"],
                    images: str = PATHS["webcapfilt_images"]) -> tuple[list[dict], SourceReport]:
    """Web CapFilt captions (protocol §6 row 1) -> ``caption`` records.

    Reads the authors' sample (``ccs_synthetic_filtered_large_2273005_raw.json``, rows ``{url, caption, jpg}``; the
    images are ``<images>/<basename of jpg>`` as `mblip.download.download_images` writes them) or any list of
    ``{caption, image}``. BLIP's full list has URLs only: it needs the authors' noun-phrase subsampling (§6.2) and a
    download first, so a row without ``jpg``/``image`` is an error rather than a guess at file names.
    """
    root, file = Path(data_root), Path(data_root) / path
    if not file.is_file():
        raise _missing_file(file, "webcapfilt")
    report = SourceReport("webcapfilt", [str(file)])
    out = []
    for i, line, row in iter_json_rows(file):
        where = _where(file, i, line)
        caption = _need_str(row, "caption", where, CAPFILT_FORMAT)
        if row.get("image"):
            rel = f"{images}/{row['image']}"
        elif row.get("jpg"):
            rel = f"{images}/{Path(str(row['jpg']).replace(BACKSLASH, '/')).name}"
        else:
            raise PaperDataError(f"{where}: no 'jpg' or 'image' key (has {sorted(row)}), so the image file is unknown. "
                                 "Use the authors' sample with image names (mblip-train/blip_captions/"
                                 "ccs_synthetic_filtered_large_2273005_raw.json) and download its images with "
                                 "mblip.download.download_images(capfilt_url_list(that file), "
                                 f"data/paper/{images})")
        report.rows += 1
        out.append({"id": f"webcapfilt-{i:07d}", "image": rel, "task": "caption", "en": {"caption": caption}})
    out = _keep_readable(out, checker, report)
    _finish(report, {"caption": out})
    return out, report


KARPATHY_FORMAT = ('{"images": [{"split", "filepath", "filename", "cocoid", "sentences": [{"raw"}, ...]}, ...]} '
                   "(Karpathy's dataset_coco.json)")


def read_coco_karpathy(data_root: str | Path, checker: ImageChecker, *, path: str = PATHS["coco_karpathy"],
                       coco: str = PATHS["coco"]) -> tuple[list[dict], SourceReport]:
    """COCO captions of the Karpathy ``train`` split only (no restval; protocol §6 row 2) -> ``caption`` records.

    Every sentence of an image is one record (``sentences[*].raw`` verbatim; mostly 5 per image, a few have more:
    414,113 in all). Image: ``<coco>/<filepath>/<filename>``, i.e. ``coco/train2014/COCO_train2014_*.jpg``.
    """
    root, file = Path(data_root), Path(data_root) / path
    data = _load_json(file, "coco")
    images = _need(data, "images", str(file), KARPATHY_FORMAT)
    report = SourceReport("coco", [str(file)])
    out = []
    for i, im in enumerate(images):
        where = _where(file, i) + " of 'images'"
        split = _need(im, "split", where, KARPATHY_FORMAT)
        if split != "train":
            report.filtered[f"images of split {split!r} (only 'train' is used)"] += 1
            continue
        folder, name = (_need_str(im, key, where, KARPATHY_FORMAT) for key in ("filepath", "filename"))
        rel = f"{coco}/{folder}/{name}"
        cocoid = im.get("cocoid", i)
        for k, sent in enumerate(_need(im, "sentences", where, KARPATHY_FORMAT)):
            raw = _need_str(sent, "raw", f"{where}, sentence {k}", KARPATHY_FORMAT)
            report.rows += 1
            out.append({"id": f"coco-{cocoid}-{k}", "image": rel, "task": "caption", "en": {"caption": raw}})
    out = _keep_readable(out, checker, report)
    _finish(report, {"caption": out})
    return out, report


VQA_FORMAT = ('questions: {"data_subtype", "questions": [{"question_id", "image_id", "question"}]}; annotations: '
              '{"annotations": [{"question_id", "multiple_choice_answer", ...}]} (the official VQAv2 files)')


def read_vqav2(data_root: str | Path, checker: ImageChecker, *, questions: str = PATHS["vqav2_questions"],
               annotations: str = PATHS["vqav2_annotations"], coco: str = PATHS["coco"]
               ) -> tuple[dict[str, list[dict]], SourceReport]:
    """VQAv2 train (protocol §6 rows 7-8) -> ``{"vqa": [...], "vqg": [...]}``, the same questions for both.

    ``en`` = ``{question, answer}`` with answer = ``multiple_choice_answer``. Questions and annotations are joined
    by ``question_id`` (the authors zip the two lists and assert the ids match). Image:
    ``coco/<data_subtype>/COCO_<data_subtype>_<image_id:012d>.jpg``.
    """
    root = Path(data_root)
    qfile, afile = root / questions, root / annotations
    qs, an = _load_json(qfile, "vqav2"), _load_json(afile, "vqav2")
    qlist = _need(qs, "questions", str(qfile), VQA_FORMAT)
    sub = qs.get("data_subtype", "train2014")
    answers = {}
    for i, a in enumerate(_need(an, "annotations", str(afile), VQA_FORMAT)):
        where = _where(afile, i) + " of 'annotations'"
        answers[_need(a, "question_id", where, VQA_FORMAT)] = _need_str(a, "multiple_choice_answer", where, VQA_FORMAT)
    report = SourceReport("vqav2", [str(qfile), str(afile)])
    out = []
    for i, q in enumerate(qlist):
        where = _where(qfile, i) + " of 'questions'"
        qid = _need(q, "question_id", where, VQA_FORMAT)
        if qid not in answers:
            raise PaperDataError(f"{where}: question_id {qid} has no annotation in {afile}; the two files must be the "
                                 f"same split (v2_OpenEnded_mscoco_{sub}_questions.json + v2_mscoco_{sub}_annotations"
                                 ".json)")
        image = _coco_train2014(_need(q, "image_id", where, VQA_FORMAT), where).replace("train2014", sub)
        report.rows += 1
        out.append({"id": f"vqav2-{qid}", "image": f"{coco}/{sub}/{image}", "task": "vqa",
                    "en": {"question": _need_str(q, "question", where, VQA_FORMAT), "answer": answers[qid]}})
    out = _keep_readable(out, checker, report)
    by_task = {"vqa": out, "vqg": [{**r, "task": "vqg"} for r in out]}
    _finish(report, by_task)
    return by_task, report


AOKVQA_FORMAT = ('a JSON list of {"split", "image_id", "question_id", "question", "choices", "correct_choice_idx", '
                 '"direct_answers", "rationales"} (aokvqa_v1p0_train.json)')


def read_aokvqa(data_root: str | Path, checker: ImageChecker, *, path: str = PATHS["aokvqa"],
                coco: str = PATHS["coco"]) -> tuple[dict[str, list[dict]], SourceReport]:
    """A-OKVQA v1.0 train (protocol §6 rows 5-6) -> ``{"cot": [...], "explain": [...]}``, English only.

    One record per rationale (3 per question) in each task; ``en`` = ``{question, answer, rationale}`` with answer =
    ``choices[correct_choice_idx]``, as the authors (a row without it falls back to its most frequent direct answer,
    counted). Rows of another split are skipped (counted). A-OKVQA uses COCO-2017 ids; like the authors we use
    ``coco/train2014/COCO_train2014_<id>.jpg`` and leave out questions whose image is not in train2014.
    """
    root, file = Path(data_root), Path(data_root) / path
    rows = _load_json(file, "aokvqa")
    if not isinstance(rows, list):
        raise PaperDataError(f"{file}: expected {AOKVQA_FORMAT}, got a {type(rows).__name__}")
    report = SourceReport("aokvqa", [str(file)])
    out = []
    for i, ex in enumerate(rows):
        where = _where(file, i)
        split = _need(ex, "split", where, AOKVQA_FORMAT)
        if split != "train":
            report.filtered[f"questions of split {split!r} (only 'train' is used)"] += 1
            continue
        question = _need_str(ex, "question", where, AOKVQA_FORMAT)
        rationales = _need(ex, "rationales", where, AOKVQA_FORMAT)
        idx = ex.get("correct_choice_idx")
        if idx is not None:
            choices = _need(ex, "choices", where, AOKVQA_FORMAT)
            if not (isinstance(idx, int) and 0 <= idx < len(choices)):
                raise PaperDataError(f"{where}: correct_choice_idx {idx!r} is not an index into choices {choices}")
            answer = choices[idx]
        else:
            direct = _need(ex, "direct_answers", where, AOKVQA_FORMAT + " (correct_choice_idx or direct_answers)")
            answer = Counter(direct).most_common(1)[0][0]
            report.filtered["answers taken from direct_answers (no correct_choice_idx; kept)"] += 1
        rel = f"{coco}/train2014/{_coco_train2014(_need(ex, 'image_id', where, AOKVQA_FORMAT), where)}"
        qid = ex.get("question_id", i)
        report.rows += 1
        for k, rationale in enumerate(rationales):
            if not isinstance(rationale, str) or not rationale.strip():
                raise PaperDataError(f"{where}: rationale {k} must be a non-empty string, got {rationale!r}")
            out.append({"id": f"aokvqa-{qid}-{k}", "image": rel, "task": "cot", "lang": "en",
                        "en": {"question": question, "answer": answer, "rationale": rationale}})
    out = _keep_readable(out, checker, report, _not_in_train2014(root, coco))
    by_task = {"cot": out, "explain": [{**r, "task": "explain"} for r in out]}
    _finish(report, by_task)
    return by_task, report


LLAVA_FORMAT = ('a JSON list of {"id", "image", "conversations": [{"from": "human", "value"}, {"from": "gpt", '
                '"value"}, ...]} (LLaVA-Instruct-150K)')
MAX_ANSWER_DOTS = 3
"""Conversation answers with more than this many '.' are dropped (the authors' "max3sent" rule: a count of '.',
not of sentences, so "e.g." and decimals count too)."""


def split_conversation(turns: Sequence[dict], where: str = "conversation", max_dots: int | None = MAX_ANSWER_DOTS
                       ) -> list[tuple[int, str, str, bool]]:
    """``(turn, instruction, answer, kept)`` per human/gpt pair.

    The human turn loses ``<image>`` and every newline (no space is put in their place, as the authors); a trailing
    unanswered human turn is ignored. ``kept`` is False when the answer has more than ``max_dots`` '.'.
    """
    out = []
    for t in range(len(turns) // 2):
        human, gpt = turns[2 * t], turns[2 * t + 1]
        for who, turn, k in (("human", human, 2 * t), ("gpt", gpt, 2 * t + 1)):
            if not isinstance(turn, dict) or turn.get("from") != who or not isinstance(turn.get("value"), str):
                raise PaperDataError(f"{where}: conversations[{k}] must be {{'from': '{who}', 'value': str}} "
                                     f"(turns alternate human, gpt), got {turn!r}. Expected format: {LLAVA_FORMAT}")
        instruction = human["value"].replace("<image>", "").replace("\n", "")
        answer = gpt["value"]
        out.append((t, instruction, answer, max_dots is None or answer.count(".") <= max_dots))
    return out


def read_llava(data_root: str | Path, checker: ImageChecker, kind: str, *, path: str | None = None,
               coco: str = PATHS["coco"]) -> tuple[list[dict], SourceReport]:
    """LLaVA-Instruct-150K (protocol §6 rows 3-4): ``kind="detail"`` (detail_23k -> ``describe`` records with
    ``{instruction, description}``) or ``kind="conversation"`` (conversation_58k split into single turns ->
    ``conversation`` records with ``{instruction, answer}``, answers with more than 3 '.' dropped).

    Image: ``coco/train2014/COCO_train2014_<id:012d>.jpg`` from the conversation id, as the authors; ids whose image
    is not in train2014 (COCO-2017 images from val2014) are left out and counted.
    """
    if kind not in ("detail", "conversation"):
        raise ValueError(f"kind must be 'detail' or 'conversation', got {kind!r}")
    source = f"llava-{kind}"
    root = Path(data_root)
    file = root / (path or PATHS[f"llava_{kind}"])
    rows = _load_json(file, source)
    if not isinstance(rows, list):
        raise PaperDataError(f"{file}: expected {LLAVA_FORMAT}, got a {type(rows).__name__}")
    task = "describe" if kind == "detail" else "conversation"
    report = SourceReport(source, [str(file)])
    out = []
    for i, conv in enumerate(rows):
        where = _where(file, i)
        cid = _need(conv, "id", where, LLAVA_FORMAT)
        rel = f"{coco}/train2014/{_coco_train2014(cid, where)}"
        turns = _need(conv, "conversations", where, LLAVA_FORMAT)
        report.rows += 1
        for t, instruction, answer, kept in split_conversation(
                turns, where, MAX_ANSWER_DOTS if kind == "conversation" else None):
            if not kept:
                report.filtered[f"turns whose answer has more than {MAX_ANSWER_DOTS} '.'"] += 1
                continue
            fields = {"instruction": instruction, ("description" if task == "describe" else "answer"): answer}
            out.append({"id": f"{source}-{cid}-{t}", "image": rel, "task": task, "en": fields})
    out = _keep_readable(out, checker, report, _not_in_train2014(root, coco))
    _finish(report, {task: out})
    return out, report


# ------------------------------------------------------------------------------------------------------------ ImageNet
BABEL_FORMAT = '{"DE": [[class index, ...], ["class name", ...]], ...} (Babel-ImageNet)'
_BABEL_FALLBACK = {"iw": "HE", "fil": "TL"}  # the authors' fallbacks when mT5's code is not a Babel key


def read_english_names(path: Path) -> tuple[list[str] | None, list[str]]:
    """``(wnids or None, English names)`` in class-index order.

    ``LOC_synset_mapping.txt`` (``n01440764 tench, Tinca tinca`` per line; first synonym used), a JSON list of
    names, or a JSON object ``{wnid: name}`` in class order.
    """
    if path.suffix == ".txt":
        wnids, names = [], []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.strip().split(" ", 1)
            if len(parts) != 2 or not re.fullmatch(r"n\d{8}", parts[0]):
                raise PaperDataError(f"{path}:{n}: expected '<wnid> <name>[, synonyms]', got {line!r}")
            wnids.append(parts[0])
            names.append(parts[1].split(",")[0].strip())
        return wnids, names
    data = _load_json(path, "imagenet")
    if isinstance(data, list) and all(isinstance(x, str) for x in data):
        return None, data
    if isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
        return list(data), list(data.values())
    raise PaperDataError(f"{path}: expected a JSON list of class names or {{wnid: name}} in class order")


def read_babel_labels(path: Path) -> dict[str, tuple[list[int], list[str]]]:
    data = _load_json(path, "imagenet")
    if not isinstance(data, dict):
        raise PaperDataError(f"{path}: expected {BABEL_FORMAT}")
    out = {}
    for key, value in data.items():
        ok = (isinstance(value, list) and len(value) == 2 and all(isinstance(v, list) for v in value)
              and len(value[0]) == len(value[1]) and all(isinstance(i, int) for i in value[0]))
        if not ok:
            raise PaperDataError(f"{path}: key {key!r}: expected [[class indices], [names]] of equal length "
                                 f"({BABEL_FORMAT})")
        out[key.upper()] = (list(value[0]), list(value[1]))
    return out


def plan_imagenet(listing: Mapping[str, Sequence[str]], wnids: Sequence[str], labels: Mapping[str, tuple],
                  english: Sequence[str], languages: Sequence[str], *, passes: int = 8, seed: int = 42,
                  images: str = PATHS["imagenet_images"]) -> tuple[list[dict], list[dict], Counter]:
    """The ImageNet classify and verify records (protocol §6.3, the authors' ``imagenet/generate_train.py``).

    ``listing[wnid]`` = the synset's image files in order; ``labels`` = Babel-ImageNet (upper-case keys);
    ``english`` = English names by class index (used for ``en``, and as the ``en`` field of every record).

    Classify: ``passes`` times, for every language and every class that language's label list has, the synset's next
    unused image; target = the class name in that language. Verify: the same walk, with the authors' image index
    walking back from where classification stopped (images are re-used); 50 % positive, a negative shows the name of
    a random other class of the language's list (25 %) or of the next class in the list (25 %).
    """
    rng = random.Random(seed)
    used = {w: 0 for w in listing}
    skipped: Counter = Counter()
    walk = []
    for code in languages:
        if code == "en":
            idxs, names = list(range(len(english))), list(english)
        else:
            key = code.upper() if code.upper() in labels else _BABEL_FALLBACK.get(code)
            if key not in labels:
                skipped["languages without Babel-ImageNet labels"] += 1
                continue
            idxs, names = labels[key]
        bad = [i for i in idxs if not 0 <= i < len(wnids)]
        if bad:
            raise PaperDataError(f"Babel-ImageNet labels of {code!r}: class indices {bad[:5]} are outside the "
                                 f"{len(wnids)} classes of the ImageNet class list; pass the full 1000-class list")
        walk.append((code, idxs, names))

    def record(task, code, n, ci, image, en, gold):
        return {"id": f"imagenet-{task}-{n}-{code}-{ci}", "image": f"{images}/{wnids[ci]}/{image}", "task": task,
                "lang": code, "en": en, "gold": {code: gold} if code != "en" else {}}

    classify, verify = [], []
    for n in range(passes):
        for code, idxs, names in walk:
            for ci, name in zip(idxs, names):
                w = wnids[ci]
                if w not in listing:
                    skipped["classify examples of a synset without image folder"] += 1
                    continue
                if used[w] >= len(listing[w]):
                    skipped["classify examples of a synset with all images used"] += 1
                    continue
                image = listing[w][used[w]]
                used[w] += 1
                classify.append(record("classify", code, n, ci, image, {"label": english[ci]}, {"label": name}))
    for n in range(passes):
        for code, idxs, names in walk:
            for j, (ci, name) in enumerate(zip(idxs, names)):
                w = wnids[ci]
                if w not in listing:
                    skipped["verify examples of a synset without image folder"] += 1
                    continue
                k = used[w]
                if k >= len(listing[w]) or k < 0:  # authors: skip at the end; below 0 they would wrap around
                    skipped["verify examples of a synset with no image left"] += 1
                    continue
                used[w] -= 1
                image = listing[w][k]
                if rng.random() < 0.5:
                    obj, label = j, "yes"
                else:
                    if len(idxs) < 2:
                        skipped["verify negatives of a language with one class"] += 1
                        continue
                    if rng.random() < 0.5:  # a random other class of the list (never the shown one)
                        obj = rng.randrange(len(idxs) - 1)
                        obj += obj >= j
                    else:  # the next class in the list
                        obj = (j + 1) % len(idxs)
                    label = "no"
                verify.append(record("verify", code, n, ci, image, {"object": english[idxs[obj]], "label": label},
                                     {"object": names[obj], "label": label}))
    return classify, verify, skipped


def read_imagenet(data_root: str | Path, checker: ImageChecker, *, languages: Sequence[str] | None = None,
                  images: str = PATHS["imagenet_images"], labels: str | None = PATHS["imagenet_labels"],
                  english: str = PATHS["imagenet_english"], passes: int = 8, seed: int = 42
                  ) -> tuple[dict[str, list[dict]], SourceReport]:
    """ImageNet classification + object verification (protocol §6 rows 10-11) -> ``{"classify", "verify"}``.

    ``images``: the ILSVRC2012 train folder (``<wnid>/<file>``, user-provided). ``labels``: Babel-ImageNet JSON;
    when the file is absent, English only (reported). ``english``: the English class names, which also fix the class
    order (class index -> wnid): ``LOC_synset_mapping.txt`` (Kaggle's ILSVRC download), or a JSON list of names (then
    the wnids are the sorted synset folders, which must be all 1000). The authors used OpenAI-CLIP's curated English
    names; pass them as a JSON list for the same English targets. ``languages``: our codes (default all 96).
    """
    root = Path(data_root)
    folder, eng_file = root / images, root / english
    if not folder.is_dir():
        raise _missing_file(folder, "imagenet")
    if not eng_file.is_file():
        raise FileNotFoundError(f"{eng_file} is missing: the English ImageNet class names (and class order) are "
                                "needed. Put LOC_synset_mapping.txt (ships with the ILSVRC2012 Kaggle download) "
                                "there, or a JSON list of the 1000 English class names (e.g. OpenAI CLIP's, the "
                                "authors' choice), or pass english=<path>")
    wnids, names = read_english_names(eng_file)
    synsets = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if wnids is None:
        if len(synsets) != len(names):
            raise PaperDataError(f"{eng_file} lists {len(names)} names without wnids and {folder} has {len(synsets)} "
                                 "synset folders: the class order cannot be known. Use LOC_synset_mapping.txt "
                                 "(wnid + name per line) or put all synset folders there")
        wnids = synsets
    langs = list(languages) if languages is not None else list(L.table())
    L.validate(langs)
    report = SourceReport("imagenet", [str(folder), str(eng_file)])
    label_file = root / labels if labels else None
    if label_file is not None and label_file.is_file():
        babel = read_babel_labels(label_file)
        report.files.append(str(label_file))
    else:
        babel = {}
        langs = [c for c in langs if c == "en"]
        report.filtered["label table missing: English class names only (no other language)"] += 1
        log.warning("imagenet: %s not found, building English-only ImageNet tasks", label_file)
    listing = {w: sorted(f.name for f in (folder / w).iterdir() if f.is_file())
               for w in wnids if (folder / w).is_dir()}
    classify, verify, skipped = plan_imagenet(listing, wnids, babel, names, langs, passes=passes, seed=seed,
                                              images=images)
    report.filtered.update(skipped)
    report.rows = len(classify) + len(verify)
    both = _keep_readable(classify + verify, checker, report)
    by_task = {"classify": [r for r in both if r["task"] == "classify"],
               "verify": [r for r in both if r["task"] == "verify"]}
    _finish(report, by_task)
    return by_task, report


# ------------------------------------------------------------------------------------------------------------ matching
MATCH_FORMAT = ('a JSON list of {"image_id", "context" (the caption shown), "label": "yes"|"no", "original_label"} '
                "(the authors' ccs_synthetic_match_1000-601000_en_raw.json)")


def match_examples(captions: Sequence[dict], *, block: int = 125, seed: int = 42) -> list[dict]:
    """Matching records from caption records: blocks of ``block`` alternate positive (the image's caption) and
    negative (a random other caption of the same list), starting positive -- the authors' 50/50 layout."""
    rng = random.Random(seed)
    out = []
    for j, r in enumerate(captions):
        own = r["en"]["caption"]
        if (j // block) % 2 == 0:
            caption, label = own, "yes"
        else:
            caption = own
            for _ in range(100):  # a caption text identical to the image's own would be a false negative
                caption = captions[rng.randrange(len(captions))]["en"]["caption"]
                if caption != own:
                    break
            if caption == own:
                continue
            label = "no"
        out.append({"id": f"match-{r['id']}", "image": r["image"], "task": "match",
                    "en": {"caption": caption, "label": label}})
    return out


def read_matching(data_root: str | Path, checker: ImageChecker, *, negatives: str | None = PATHS["match_negatives"],
                  captions: Sequence[dict] | None = None, start: int = 1000, stop: int | None = 601000,
                  block: int = 125, seed: int = 42, images: str = PATHS["webcapfilt_images"]
                  ) -> tuple[list[dict], SourceReport]:
    """Image-caption matching (protocol §6 row 9) -> ``match`` records ``{caption, label}``.

    With the authors' negatives file (``negatives``, if it exists): their examples and hard negatives as they are.
    Otherwise from ``captions`` (Web CapFilt caption records, already image-checked): the slice
    ``[start:stop]`` of the readable captions, blocks of ``block`` alternating positive / random negative
    (:func:`match_examples`).
    """
    root = Path(data_root)
    file = root / negatives if negatives else None
    if file is not None and file.is_file():
        report = SourceReport("match", [str(file)])
        out = []
        for i, line, row in iter_json_rows(file):
            where = _where(file, i, line)
            label = _need(row, "label", where, MATCH_FORMAT)
            if label not in ("yes", "no"):
                raise PaperDataError(f"{where}: label must be 'yes' or 'no', got {label!r} ({MATCH_FORMAT})")
            name = Path(_need_str(row, "image_id", where, MATCH_FORMAT).replace("\\", "/")).name
            report.rows += 1
            out.append({"id": f"match-{i:07d}", "image": f"{images}/{name}", "task": "match",
                        "en": {"caption": _need_str(row, "context", where, MATCH_FORMAT), "label": label}})
        out = _keep_readable(out, checker, report)
    elif captions is not None:
        report = SourceReport("match", [f"Web CapFilt captions [{start}:{stop}] with random negatives"])
        window = list(captions[start:stop])
        report.rows = len(window)
        out = match_examples(window, block=block, seed=seed)
        report.filtered["examples without a different caption to use as negative"] += len(window) - len(out)
    else:
        raise FileNotFoundError(f"caption matching needs the authors' negatives file ({file}) or Web CapFilt captions: "
                                f"{FETCH_HINT['match']}")
    _finish(report, {"match": out})
    return out, report


# =====================================================================================================================
# All sources -> English records per task, with a coverage summary
# =====================================================================================================================

def build_paper_english(data_root: str | Path, tasks: Sequence[str] = PAPER_TASKS, *,
                        languages: Sequence[str] | None = None, checker: ImageChecker | None = None,
                        image_cache: str | Path | None = None, workers: int = 8, paths: Mapping[str, str] | None = None,
                        imagenet_passes: int = 8, match_window: tuple[int, int | None] = (1000, 601000),
                        match_block: int = 125, seed: int = 42, progress: bool = True
                        ) -> tuple[dict[str, list[dict]], dict]:
    """The English records of every task in ``tasks`` (keys of :data:`TASK_SOURCES`) from the official sources under
    ``data_root``, and the coverage summary (per source: rows read, records kept, images left out, protocol filters).

    ``languages`` only matters for ImageNet (which languages get examples); ``paths`` overrides :data:`PATHS` keys;
    ``match_window`` / ``match_block`` shape caption matching when the authors' negatives file is absent.
    """
    unknown = [t for t in tasks if t not in TASK_SOURCES]
    if unknown:
        raise KeyError(f"unknown task(s) {unknown}; the paper's tasks are {', '.join(PAPER_TASKS)}")
    p = {**PATHS, **(paths or {})}
    bad_keys = sorted(set(paths or {}) - set(PATHS))
    if bad_keys:
        raise KeyError(f"unknown path key(s) {bad_keys}; known: {', '.join(PATHS)}")
    root = Path(data_root)
    checker = checker or ImageChecker(root, cache=image_cache, workers=workers, progress=progress)
    needed = [s for s in SOURCE_ORDER if any(s in TASK_SOURCES[t] for t in tasks)]
    got: dict[str, list[dict]] = {}
    reports: dict[str, SourceReport] = {}
    capfilt: list[dict] | None = None
    for source in needed:
        if source == "webcapfilt":
            capfilt, reports[source] = read_webcapfilt(root, checker, path=p["webcapfilt"],
                                                       images=p["webcapfilt_images"])
            got.setdefault("caption", []).extend(capfilt)
        elif source == "coco":
            recs, reports[source] = read_coco_karpathy(root, checker, path=p["coco_karpathy"], coco=p["coco"])
            got.setdefault("caption", []).extend(recs)
        elif source == "vqav2":
            by_task, reports[source] = read_vqav2(root, checker, questions=p["vqav2_questions"],
                                                  annotations=p["vqav2_annotations"], coco=p["coco"])
            got.update(by_task)
        elif source == "aokvqa":
            by_task, reports[source] = read_aokvqa(root, checker, path=p["aokvqa"], coco=p["coco"])
            got.update(by_task)
        elif source in ("llava-detail", "llava-conversation"):
            kind = source.split("-", 1)[1]
            recs, reports[source] = read_llava(root, checker, kind, path=p[f"llava_{kind}"], coco=p["coco"])
            got["describe" if kind == "detail" else "conversation"] = recs
        elif source == "imagenet":
            by_task, reports[source] = read_imagenet(root, checker, languages=languages, images=p["imagenet_images"],
                                                     labels=p["imagenet_labels"], english=p["imagenet_english"],
                                                     passes=imagenet_passes, seed=seed)
            got.update(by_task)
        elif source == "match":
            neg = root / p["match_negatives"]
            if not neg.is_file() and capfilt is None:
                capfilt, reports["webcapfilt"] = read_webcapfilt(root, checker, path=p["webcapfilt"],
                                                                 images=p["webcapfilt_images"])
            got["match"], reports[source] = read_matching(root, checker, negatives=p["match_negatives"],
                                                          captions=capfilt, start=match_window[0],
                                                          stop=match_window[1], block=match_block, seed=seed,
                                                          images=p["webcapfilt_images"])
    english = {t: got.get(t, []) for t in tasks}
    coverage = {
        "data_root": str(root),
        "tasks": {t: len(v) for t, v in english.items()},
        "sources": {name: r.to_dict() for name, r in reports.items()},
        "images_left_out": {"missing": sum(r.images_missing for r in reports.values()),
                            "unreadable": sum(r.images_unreadable for r in reports.values()),
                            "records": sum(r.records_dropped for r in reports.values())},
    }
    return english, coverage


def coverage_markdown(coverage: dict) -> str:
    """The coverage summary as a Markdown table (one row per source; "protocol" = the official file's size)."""
    lines = ["| source | rows | protocol | records | images missing | unreadable | filtered |",
             "|---|---:|---:|---|---:|---:|---|"]
    for name, s in coverage["sources"].items():
        proto = s.get("protocol_rows")
        cells = [name, f"{s['rows']:,}", f"{proto['count']:,} {proto['unit']}" if proto else "",
                 ", ".join(f"{t} {n:,}" for t, n in s["records"].items()), f"{s['images_missing']:,}",
                 f"{s['images_unreadable']:,}", "; ".join(f"{why}: {n:,}" for why, n in s["filtered"].items())]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# =====================================================================================================================
# Language assignment, translation requests and the mix for the paper's tasks (thin layer over mblip.taskmix)
# =====================================================================================================================

_TASKMIX_TASKS = ("caption", "vqa", "vqg", "match", "classify", "verify", "describe")  # taskmix.assign knows these
_EXTRA_SALT = {"conversation": 7}  # continues taskmix's per-task salts: each task file its own shuffle
_BUILT_BY_TASKMIX = ("caption", "vqa", "vqg", "match", "classify", "verify")


def assign_paper(english: Mapping[str, list[dict]], langs: list[str] | None, assignment: str, temperature: float,
                 seed: int, translated: bool) -> dict[str, list[str | None]]:
    """Language of every record: `taskmix.assign` per task, except A-OKVQA (English) and records that carry their
    own ``lang`` (ImageNet: one image per (language, class) pair; left out if ``langs`` excludes the language)."""
    out = {}
    for task, rows in english.items():
        if not translated or task in ENGLISH_ONLY_TASKS:
            out[task] = ["en"] * len(rows)
        elif rows and all("lang" in r for r in rows):
            out[task] = [r["lang"] if langs is None or r["lang"] in langs else None for r in rows]
        elif task in _TASKMIX_TASKS:
            out[task] = M.assign(task, len(rows), langs, assignment, temperature, seed, translated)
        elif task in _EXTRA_SALT:
            out[task] = L.assign(len(rows), langs, assignment=assignment, temperature=temperature,
                                 seed=seed + 1000 * _EXTRA_SALT[task])
        else:
            raise KeyError(f"no language assignment for task {task!r}; tasks: {', '.join(PAPER_TASKS)}")
    return out


def plan_paper_requests(english: Mapping[str, list[dict]], assigned: Mapping[str, list[str | None]]) -> list[M.Request]:
    """Every string the paper mix needs translated: `taskmix.plan_requests` for its tasks, plus LLaVA's
    instructions and answers (both translated, protocol §7). A-OKVQA and ImageNet need none."""
    std = {t: v for t, v in english.items() if t in _BUILT_BY_TASKMIX}
    reqs = dict.fromkeys(M.plan_requests(std, {t: assigned[t] for t in std}))
    for task in ("describe", "conversation"):
        target = "description" if task == "describe" else "answer"
        for r, lang in zip(english.get(task, []), assigned.get(task, [])):
            if lang not in (None, "en"):
                reqs.setdefault(M.Request(r["en"]["instruction"], lang))
                reqs.setdefault(M.Request(r["en"][target], lang))
    return list(reqs)


def build_paper(english: Mapping[str, list[dict]], assigned: Mapping[str, list[str | None]],
                tr: Callable[[str, str], str], labels: Mapping[str, Mapping[str, str]], seed: int) -> list[dict]:
    """The mix records of the paper's tasks (schema of `mblip.taskmix`).

    caption / vqa / vqg / match / classify / verify: `taskmix.build`. Added here:

    * describe, conversation (LLaVA): prompt = the translated instruction, target = the translated answer;
    * cot: a random CoT question template with the question; target = a random CoT answer template with the
      rationale (one final '.' removed, as the authors) and the answer (the authors' "{1} because {1}." bug kept);
    * explain: a random explanation template with question and answer; target = the rationale.
    """
    std = {t: v for t, v in english.items() if t in _BUILT_BY_TASKMIX}
    out = M.build(std, {t: assigned[t] for t in std}, tr, labels, seed)
    rng = random.Random(seed + 1)  # its own stream: adding a task does not change the others' templates
    for task, rows in english.items():
        if task in _BUILT_BY_TASKMIX:
            continue
        for r, lang in zip(rows, assigned[task]):
            if lang is None:
                continue
            f = r["en"]
            if task == "describe":
                prompt, target = tr(f["instruction"], lang), tr(f["description"], lang)
            elif task == "conversation":
                prompt, target = tr(f["instruction"], lang), tr(f["answer"], lang)
            elif task == "cot":
                rationale = f["rationale"][:-1] if f["rationale"].endswith(".") else f["rationale"]
                prompt = rng.choice(T.AOKVQA_COT_QUESTION_TEMPLATES).format(f["question"])
                target = rng.choice(T.AOKVQA_COT_ANSWER_TEMPLATES).format(rationale, f["answer"])
            elif task == "explain":
                prompt = rng.choice(T.AOKVQA_EXPLANATION_TEMPLATES).format(f["question"], f["answer"])
                target = f["rationale"]
            else:
                raise ValueError(f"no builder for task {task!r}; tasks: {', '.join(PAPER_TASKS)}")
            out.append({"id": r["id"], "image": r["image"], "lang": lang, "task": task, "prompt": prompt,
                        "target": target})
    return out


# =====================================================================================================================
# The authors' released mix -> our record schema (streaming)
# =====================================================================================================================

RELEASED_FORMAT = ('a JSON list of {"context", "label", "image_id"} (Gregor/mblip-train task_mix_*_mt.json, '
                   "protocol §4)")

# image_id forms in the released files -> folder under the data root (first match wins).
RELEASED_IMAGE_DIRS: tuple[tuple[str, str], ...] = (
    (r"COCO_train2014_\d{12}\.jpg", "coco/train2014"),  # COCO captions, VQAv2, LLaVA, A-OKVQA
    (r"n\d{8}/[^/]+", "imagenet/train"),  # ImageNet: <wnid>/<file>
    (r"\d+\.jpg", "webcapfilt/images"),  # Web CapFilt and matching: the authors' download names
)

_NAME_ALIASES = {"Hebrew": "iw"}  # the authors' ImageNet script names iw "Hebrew" (elsewhere "former Hebrew")
# mC4 languages outside mBLIP's 96 that the authors' ImageNet script may name (lang_code2lang of the script)
_OUTSIDE_TABLE_NAMES = ("Corsican", "Western Frisian", "Hawaiian", "Hmong, Mong", "Latin")


def _template_regex(template: str, prefix: str, groups: Mapping[str, str]) -> str:
    """A template as a regex: literal text escaped; slot ``{}`` / ``{0}`` / ``{1}`` becomes the named group
    ``<prefix>_s<slot>`` with pattern ``groups[slot]`` (default: any text); a repeated slot must repeat its text."""
    parts, auto, seen = [], 0, set()
    for piece in re.split(r"(\{\d?\})", template):
        if re.fullmatch(r"\{\d?\}", piece):
            slot = piece[1:-1] or str(auto)
            auto += 1
            name = f"{prefix}_s{slot}"
            parts.append(f"(?P={name})" if slot in seen else f"(?P<{name}>{groups.get(slot, '.+?')})")
            seen.add(slot)
        else:
            parts.append(re.escape(piece))
    return "".join(parts)


class TemplateMatcher:
    """Infers ``(task, lang)`` of a released row from its context (instruction) and label.

    * caption: a language-named caption template (``lang`` = that language), an English caption template (en), or
      -- with the released ``caption_templates.json`` -- a machine-translated one (its language);
    * classify: an ImageNet template naming the language;
    * vqa / vqg: a VQA / VQG template; ``lang`` = the language the template names, i.e. the *answer* language: every
      English example and about half of the non-English ones name "English" (the answer rule, protocol §6.3), so a
      VQA/VQG "en" row may have a question in another language;
    * cot / explain: an A-OKVQA template (en);
    * match / verify: a matching / ImageNet-decide template whose label is that template's yes/no answer; the text
      inside is in any language, so ``lang`` = "unknown";
    * anything else (LLaVA instructions have no template) -> task "released", lang "unknown".

    ImageNet rows naming a language outside our table (Latin, Corsican, ...) give classify / "unknown".
    """

    def __init__(self, caption_templates: Mapping[str, Sequence[str]] | None = None):
        table = L.table()
        self.names = {l.name: c for c, l in table.items()} | _NAME_ALIASES
        self.exact: dict[str, tuple[str, str]] = {t: ("caption", "en") for t in T.CAPTION_TEMPLATES_EN}
        for name, code in self.names.items():
            for t in T.CAPTION_TEMPLATES_LANG:
                self.exact.setdefault(t.format(name), ("caption", code))
            for t in T.IMAGENET_TEMPLATES:
                self.exact.setdefault(t.format(name), ("classify", code))
        for code, ts in (caption_templates or {}).items():
            if code in table:
                for t in ts:
                    self.exact.setdefault(t, ("caption", code))
        for name in _OUTSIDE_TABLE_NAMES:  # ImageNet rows of mC4 languages mBLIP does not otherwise train on
            for t in T.IMAGENET_TEMPLATES:
                self.exact.setdefault(t.format(name), ("classify", "unknown"))
        lang_re = "(?:" + "|".join(re.escape(n) for n in sorted(self.names, key=len, reverse=True)) + ")"

        def family(templates, groups):
            alts = [f"(?P<t{i}>{_template_regex(t, f't{i}', groups)})" for i, t in enumerate(templates)]
            return re.compile("|".join(alts), re.DOTALL)

        # Order matters: a row is given the first family that matches (and whose label check passes).
        self.families = [
            ("verify", family([t for t, _, _ in T.IMAGENET_DECIDE_TEMPLATES], {}),
             [(y, n) for _, y, n in T.IMAGENET_DECIDE_TEMPLATES], None),
            ("match", family([t for t, _, _ in T.MATCHING_TEMPLATES], {}),
             [(y, n) for _, y, n in T.MATCHING_TEMPLATES], None),
            ("cot", family(T.AOKVQA_COT_QUESTION_TEMPLATES, {}), None, "en"),
            ("explain", family(T.AOKVQA_EXPLANATION_TEMPLATES, {}), None, "en"),
            ("vqg", family(T.VQG_TEMPLATES, {"0": lang_re}), None, "0"),
            ("vqa", family(T.VQA_TEMPLATES, {"1": lang_re}), None, "1"),
        ]

    def infer(self, context: str, label: str) -> tuple[str, str]:
        if context in self.exact:
            return self.exact[context]
        for task, rx, answers, lang in self.families:
            m = rx.fullmatch(context)
            if not m:
                continue
            i = int(m.lastgroup[1:])
            if answers is not None:
                if label not in answers[i]:
                    continue
                return task, "unknown"
            if lang == "en":
                return task, "en"
            return task, self.names[m.group(f"t{i}_s{lang}")]
        return "released", "unknown"


def _released_image(image_id: str, image_dirs, where: str) -> str:
    image_id = image_id.replace("\\", "/").removeprefix("./")
    for pattern, folder in image_dirs:
        if re.fullmatch(pattern, image_id):
            return f"{folder}/{image_id}"
    raise PaperDataError(f"{where}: image_id {image_id!r} matches no known image folder "
                         f"({', '.join(p for p, _ in image_dirs)}); pass image_dirs=[(regex, folder), ...] to say "
                         "where such images live under the data root")


def iter_released(path: str | Path, *, matcher: TemplateMatcher | None = None,
                  image_dirs: Sequence[tuple[str, str]] = RELEASED_IMAGE_DIRS, chunk_chars: int = 1 << 20
                  ) -> Iterator[dict]:
    """The rows of a released task-mix file as records ``{id, image, lang, task, prompt, target}``, one at a time
    (:func:`iter_json_rows`: memory stays at one chunk + one row, whatever the file size). ``id`` is
    ``<file stem>-<row index>``; ``image`` is relative to the data root (:data:`RELEASED_IMAGE_DIRS`)."""
    path = Path(path)
    if not path.is_file():
        raise _missing_file(path, "released")
    matcher = matcher or TemplateMatcher()
    for i, line, row in iter_json_rows(path, chunk_chars):
        where = _where(path, i, line)
        context = _need(row, "context", where, RELEASED_FORMAT)
        label = _need(row, "label", where, RELEASED_FORMAT)
        image_id = _need_str(row, "image_id", where, RELEASED_FORMAT)
        if not isinstance(context, str) or not isinstance(label, str):
            raise PaperDataError(f"{where}: context and label must be strings ({RELEASED_FORMAT})")
        task, lang = matcher.infer(context, label)
        yield {"id": f"{path.stem}-{i:08d}", "image": _released_image(image_id, image_dirs, where), "lang": lang,
               "task": task, "prompt": context, "target": label}


def convert_released(data_root: str | Path, out_dir: str | Path, *, src: str = PATHS["released"],
                     check_images: bool = True, checker: ImageChecker | None = None, val_rows: int = 500,
                     caption_templates: str | None = PATHS["caption_templates"],
                     image_dirs: Sequence[tuple[str, str]] = RELEASED_IMAGE_DIRS, batch: int = 8192,
                     chunk_chars: int = 1 << 20, progress: bool = True) -> dict:
    """Stream the authors' released mix into ``out_dir/{train,val}/<task>.jsonl`` (our schema), skipping translation.

    The first ``val_rows`` rows go to ``val/`` (the authors validate on ``train[:500]`` and train on
    ``train[500:]``, protocol §6.1). Rows are read, image-checked (``check_images``; images under ``data_root``)
    and written in batches of ``batch``, so memory stays small for the ~1 GB file (the image checker remembers one
    status per distinct image: a few hundred MB for the ~2.5M images of the full mix). Rows with a missing or
    unreadable image are left out and counted. Shards of an earlier run in ``out_dir/{train,val}`` are replaced.
    Returns (and logs) the report: rows, records per split and task, languages per task, images left out.
    """
    from tqdm.auto import tqdm

    root = Path(data_root)
    src_path = Path(src) if Path(src).is_absolute() else root / src
    ct_file = root / caption_templates if caption_templates else None
    ct = _load_json(ct_file, "released") if ct_file is not None and ct_file.is_file() else None
    if ct is not None and not isinstance(ct, dict):
        raise PaperDataError(f"{ct_file}: expected {{language code: [translated caption templates]}}")
    checker = checker or (ImageChecker(root, progress=False) if check_images else None)
    out_dir = Path(out_dir)
    for old in [*out_dir.glob("train/*.jsonl"), *out_dir.glob("val/*.jsonl")]:
        old.unlink()  # a task absent from this run must not keep an earlier run's shard
    report = {"source": str(src_path), "rows": 0, "written": {"train": Counter(), "val": Counter()},
              "langs": {}, "images_missing": 0, "images_unreadable": 0, "records_dropped_for_images": 0,
              "bad_images": [], "images_checked": bool(checker), "caption_templates": str(ct_file) if ct else None}
    handles = {}

    def write(batch_rows):
        status = checker.check((r["image"] for _, r in batch_rows), desc="released images") if checker else {}
        for i, r in batch_rows:
            s = status.get(r["image"])
            if s is not None:
                report["records_dropped_for_images"] += 1
                if r["image"] not in seen_bad:
                    seen_bad.add(r["image"])
                    report["images_missing" if s == "missing" else "images_unreadable"] += 1
                    if len(report["bad_images"]) < 10:
                        report["bad_images"].append([r["image"], s])
                continue
            split = "val" if i < val_rows else "train"
            key = (split, r["task"])
            if key not in handles:
                (out_dir / split).mkdir(parents=True, exist_ok=True)
                handles[key] = open(out_dir / split / f"{r['task']}.jsonl", "w", encoding="utf-8", newline="\n")
            handles[key].write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")
            report["written"][split][r["task"]] += 1
            report["langs"].setdefault(r["task"], Counter())[r["lang"]] += 1

    seen_bad: set[str] = set()
    pending = []
    bar = tqdm(desc="released rows", unit="row", disable=not progress, smoothing=0.05)
    try:
        for i, rec in enumerate(iter_released(src_path, matcher=TemplateMatcher(ct), image_dirs=image_dirs,
                                              chunk_chars=chunk_chars)):
            pending.append((i, rec))
            report["rows"] += 1
            if len(pending) >= batch:
                write(pending)
                bar.update(len(pending))
                pending = []
        write(pending)
        bar.update(len(pending))
    finally:
        bar.close()
        for h in handles.values():
            h.close()
    report["written"] = {s: dict(sorted(c.items())) for s, c in report["written"].items()}
    report["langs"] = {t: dict(sorted(c.items())) for t, c in sorted(report["langs"].items())}
    log.info("released mix %s: %s rows -> %s train + %s val records; images left out: %s missing, %s unreadable "
             "(%s records)", src_path.name, f"{report['rows']:,}", f"{sum(report['written']['train'].values()):,}",
             f"{sum(report['written']['val'].values()):,}", report["images_missing"], report["images_unreadable"],
             report["records_dropped_for_images"])
    return report
