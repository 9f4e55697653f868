"""Benchmark metrics, reproducing the mBLIP evaluation code (gregor-ge/mBLIP, `src/tasks/vllm/evaluation.py`).

Every scorer says which protocol it follows and where it departs from it. Reference:
`shared/reference/eval-suite.md` (section numbers below point there).

| function               | benchmarks                 | protocol                                              |
|------------------------|----------------------------|-------------------------------------------------------|
| `caption_scores`       | XM3600, xFlickrCO, COCO    | mBLIP `caption_evaluation`: segment zh/ja/th, NFC,    |
|                        |                            | PTB, pycocoevalcap `Bleu(4)` + `Cider()` (§2, §9)     |
| `exact_match_accuracy` | xGQA, XVNLI, MaRVL, POPE   | mBLIP `classification_evaluation` `acc` (§3)          |
| `relaxed_accuracy`     | same                       | same function, `relaxed_acc`                          |
| `vqav2_accuracy`       | VQAv2                      | leave-one-out; LAVIS / mBLIP / official-2021 (§8.1)   |
| `maxm_accuracy`        | MaXM                       | mBLIP `vqa_maxm_classification_evaluation` (§6.2)     |
| `pope_scores`          | POPE                       | official POPE `evaluate.py` + mBLIP exact match (§7)  |
| `chair_scores`         | CHAIR                      | Rohrbach et al., as copied into mBLIP `chair` (§7)    |
| `average`              | all multilingual tables    | mean with / without English (IGLUE `avg`)             |

Scales: every score is returned on the raw scale of its reference implementation (CIDEr as pycocoevalcap
returns it, accuracies in [0, 1]). Paper tables report ×100 (CIDEr 0.75 → "75.0"); the report stage scales,
this module never does.

Nothing here does I/O at import time. The heavy dependencies (pycocoevalcap, SudachiPy, PyThaiNLP) are
imported on first use, so the VQA scorers work without them.
"""

from __future__ import annotations

import contextlib
import functools
import html
import io
import math
import os
import re
import shutil
import subprocess
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence

__all__ = [
    "SEGMENTERS",
    "segment",
    "java_available",
    "ptb_tokenize",
    "caption_scores",
    "vqa_clean",
    "exact_match_accuracy",
    "relaxed_accuracy",
    "token_f1",
    "vqav2_accuracy",
    "maxm_accuracy",
    "pope_answer",
    "pope_scores",
    "COCO_SYNONYMS",
    "singularize",
    "coco_mentions",
    "chair_scores",
    "average",
]


# =====================================================================================================
# 1. Language-aware segmentation (mBLIP `convert_xm3600_to_coco.py` + `caption_evaluation`)
# =====================================================================================================

#: Languages written without spaces, and the segmenter mBLIP applies to them (spaCy 3.5 defaults):
#: zh → `spacy.lang.zh.Chinese()` (segmenter "char"), ja → `Japanese()` (SudachiPy, split mode A,
#: sudachidict_core), th → `Thai()` (PyThaiNLP `word_tokenize`, engine newmm). Every other language
#: is left to PTB's whitespace/punctuation split.
SEGMENTERS: dict[str, str] = {"zh": "char", "ja": "sudachi-A", "th": "pythainlp-newmm"}

_LANG_CODE = re.compile(r"^[a-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")
# Country codes that are not ISO 639 language codes but are often typed for one. Silently treating
# "jp" as a space-delimited language would skip segmentation and collapse CIDEr, so we refuse.
_COUNTRY_NOT_LANGUAGE = {"jp": "ja", "cn": "zh", "cz": "cs", "dk": "da", "gr": "el", "ua": "uk"}


def _base_language(lang: str) -> str:
    """`zh-Hant` → `zh`, after checking that `lang` looks like an ISO 639 code."""
    if not isinstance(lang, str) or not _LANG_CODE.match(lang):
        raise ValueError(
            f"lang must be an ISO 639 code such as 'en', 'zh' or 'zh-Hant', got {lang!r}"
        )
    base = lang.replace("_", "-").split("-")[0]
    if base in _COUNTRY_NOT_LANGUAGE:
        raise ValueError(
            f"lang {lang!r} is a country code, not a language code; did you mean "
            f"{_COUNTRY_NOT_LANGUAGE[base]!r}?"
        )
    return base


def _segment_chars(text: str) -> str:
    # spaCy's Chinese "char" segmenter: every non-space character is a token (Latin letters and
    # digits included: "NBA" -> "N B A"), whitespace is dropped.
    return " ".join(ch for ch in text if not ch.isspace())


@functools.lru_cache(maxsize=1)
def _sudachi():
    from sudachipy import Dictionary, SplitMode

    # spaCy's Japanese() calls SudachiPy with split_mode=None, which it maps to mode A.
    return Dictionary(dict="core").tokenizer(mode=SplitMode.A)


def _segment_sudachi(text: str) -> str:
    # spaCy drops empty surfaces and turns whitespace morphemes into token whitespace.
    surfaces = (m.surface() for m in _sudachi().tokenize(text))
    return " ".join(s for s in surfaces if s and not s.isspace())


def _segment_thai(text: str) -> str:
    from pythainlp.tokenize import word_tokenize

    return " ".join(t for t in word_tokenize(text, engine="newmm") if t and not t.isspace())


_SEGMENTER_FUNCTIONS = {"char": _segment_chars, "sudachi-A": _segment_sudachi,
                        "pythainlp-newmm": _segment_thai}


def segment(text: str, lang: str) -> str:
    """Word-segment `text` the way mBLIP's spaCy pipeline does for `lang`; returns space-joined tokens.

    zh: one token per non-space character; ja: SudachiPy mode A (sudachidict_core); th: PyThaiNLP
    newmm. Other languages are returned unchanged (PTB splits them later). Region/script subtags are
    ignored (`zh-Hant` segments like `zh`). Segmentation is dictionary-dependent: requirements.txt
    pins sudachidict-core and pythainlp. mBLIP applies NFC *after* segmentation; so does
    `caption_scores`, this function does not normalise.

    Difference from mBLIP: spaCy is not used (not a dependency). zh is the pure-Python equivalent of
    spaCy's "char" segmenter (identical CIDEr, eval-suite §2); ja and th call SudachiPy and PyThaiNLP
    with the settings spaCy uses, dropping whitespace tokens (PTB would drop them anyway).
    """
    name = SEGMENTERS.get(_base_language(lang))
    return text if name is None else _SEGMENTER_FUNCTIONS[name](text)


# =====================================================================================================
# 2. PTB tokenisation: Stanford CoreNLP 3.4.1 through java (reference) or a pure-Python approximation
# =====================================================================================================

# Characters that Java's line reader treats as line breaks. pycocoevalcap only replaces "\n", so a
# caption containing one of these shifts every later caption onto the wrong image (its zip() then
# silently truncates). We replace them with a space, which is what the caption meant anyway.
_JAVA_LINE_BREAKS = re.compile("[\r\n\x0b\x0c\x1c\x1d\x1e\u2028\u2029]")


def _ptb_punctuation() -> frozenset[str]:
    from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS

    return frozenset(PUNCTUATIONS)


def java_available() -> bool:
    """True if a `java` executable is on PATH (needed for the reference PTB tokenizer)."""
    return shutil.which("java") is not None


def _corenlp_jar() -> str:
    from pycocoevalcap.tokenizer import ptbtokenizer

    jar = os.path.join(os.path.dirname(os.path.abspath(ptbtokenizer.__file__)),
                       ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR)
    if not os.path.isfile(jar):
        raise FileNotFoundError(f"pycocoevalcap's CoreNLP jar is missing: {jar}; reinstall pycocoevalcap==1.2")
    return jar


def _ptb_java(lines: list[str]) -> list[str]:
    """pycocoevalcap `PTBTokenizer.tokenize`, run ourselves.

    Same jar, same command (`PTBTokenizer -preserveLines -lowerCase`), same punctuation filter. The
    difference is where the temporary input file lives: pycocoevalcap writes it next to the jar inside
    site-packages (fails on a read-only install); we write it to a private temp directory.
    """
    if not lines:
        return []
    jar = _corenlp_jar()
    with tempfile.TemporaryDirectory(prefix="mblip-ptb-") as tmp:
        path = os.path.join(tmp, "captions.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(_JAVA_LINE_BREAKS.sub(" ", line) for line in lines))
        proc = subprocess.run(
            ["java", "-cp", jar, "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", path],
            capture_output=True, check=False,
        )
    if proc.returncode != 0:
        raise RuntimeError(
            f"java PTBTokenizer failed (exit {proc.returncode}): {proc.stderr.decode(errors='replace')[-2000:]}\n"
            "Fix the java install, or pass tokenizer='ptb-python' to use the pure-Python approximation."
        )
    out = proc.stdout.decode("utf-8").split("\n")
    if len(out) != len(lines):
        raise RuntimeError(
            f"java PTBTokenizer returned {len(out)} lines for {len(lines)} captions; the captions contain a "
            "character Java reads as a line break. Please report the offending caption."
        )
    punct = _ptb_punctuation()
    return [" ".join(w for w in line.rstrip().split(" ") if w not in punct) for line in out]


# ---- pure-Python approximation -----------------------------------------------------------------------
# Written against the behaviour of CoreNLP 3.4.1 as pycocoevalcap runs it (probed with the jar, not
# ported from its source). Covers what captions contain: sentence punctuation, clitics, abbreviations,
# quotes, brackets, dashes, CJK / Indic / Arabic punctuation, symbols, emoji. Known differences are
# rare constructions (emoticons, HTML tags, hashtags, "v1.2", "US$5", "12:30pm", words with several
# apostrophes). See tests/test_metrics.py::test_ptb_python_matches_java_on_sample_captions.

# Words that keep their final period (any case), as probed from CoreNLP 3.4.1.
_PTB_ABBREVIATIONS = frozenset("""
st mr mrs ms dr drs jr sr vs co cos inc ltd mt ave etc jan feb mar apr jun jul aug sep sept oct nov dec
mon tue tues wed thu thurs fri gen gov govs prof profs sen sens rep reps capt lt col sgt corp bros dept blvd
rd est cf al ft sq univ assn ph hon rev ext ala ariz calif colo conn ct dak fla ga ind kan kans ky md mich
minn mo mont neb nev okla penn tenn va vt wis wisc wyo pty ptys pte ptes plc rt bancorp bhd intl sys invt
elec natl mfg mtg tel seq atty attys messrs adm maj cpl pvt ste pres lieut brig cmdr comdr pfc spc supt
supts det mme mlle esq bldg ph.d ed.d
""".split())
# Words that keep their final period only when capitalised ("Ill." yes, "ill." no).
_PTB_ABBREVIATIONS_CAPITALISED = frozenset("ill wash la pa miss mass del ore tex az ark".split())
_PTB_ABBREVIATION_BEFORE_NUMBER = re.compile(r"(?i)(?:no|nos|figs?|ca|pp|art|op|prop)\.")
# Capitalised words after which CoreNLP 3.4.1 treats "x." (single letter) as a sentence end (probed).
_PTB_SENTENCE_STARTERS = frozenset("""
a about after an as at but he her here however if in it last many more now once one other our since so
some such that the their then there these they this we what when while yet you she
""".split())
_PTB_ACRONYM = re.compile(r"[A-Za-z](?:\.[A-Za-z])+")  # u.s, e.g, a.m (final period re-attached)

# Characters CoreNLP deletes (no token): CJK brackets and quotes, most currency signs, emoji, ...
_PTB_DELETED_RANGES = (
    (0x2012, 0x2012), (0x2024, 0x2025), (0x2027, 0x2027), (0x203C, 0x203D), (0x2043, 0x2043),
    (0x2045, 0x205E), (0x20A1, 0x20A3), (0x20A5, 0x20AB), (0x20AD, 0x20C0), (0x3003, 0x3004),
    (0x3008, 0x3011), (0x3013, 0x301F), (0x060D, 0x060F), (0x061D, 0x061D), (0x066B, 0x066C),
    (0x0970, 0x0970), (0x0E5A, 0x0E5B), (0xFE50, 0xFE6B), (0x1F000, 0x1FAFF),
)
# Characters that become a token CoreNLP's punctuation filter removes ('' `` ` ' -- ...): we just
# treat them as boundaries.
_PTB_REMOVED = frozenset('"`\u00ab\u00bb\u2018\u201b\u201c\u201d\u2039\u203a\u2013\u2014\u2015\u2026')
_PTB_TOKEN_MAP = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-",
                  "\u00a3": "#", "\u20ac": "$", "\u00a4": "$", "\u20a0": "$", "\u00a2": "cents"}
# ASCII symbols that are always a token of their own.
_PTB_ALWAYS_SPLIT = frozenset(";*+=^~|\\<>()[]{}%$")
# Word-internal punctuation: kept inside a word, split off at its edges.
_PTB_WORD_INTERNAL = frozenset(".-_/@'!?\u2019\u2010\u2011#&,:")
_PTB_ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u200e\u200f\u2060\ufeff")
_PTB_SPECIAL_SPLITS = {"cannot": 3, "gonna": 3, "gotta": 3, "wanna": 3, "lemme": 3, "gimme": 3}
_PTB_KEEP_APOSTROPHE_WORDS = frozenset(
    "c'est o'clock c'mon nor'easter ev'ry li'l nat'l e'er s'mores 'cause 'em 'till 'til 'n 'n' "
    "somethin' dunkin' ol'".split())
_PTB_CLITIC = re.compile(r"(?i)(n't|'s|'re|'ve|'ll|'d|'m)$")
_PTB_DECADE = re.compile(r"'[2-9]0s")
_PTB_BARE_CLITIC = re.compile(r"'(?:s|re|ve|ll|d|m)")
_PTB_LETTERS = r"[^\W\d_]"
_PTB_APOS_WORD = (
    re.compile(rf"[A-HJ-XZn]'{_PTB_LETTERS}{{2,}}"),                               # O'Neil, n'est
    re.compile(rf"[dlo]'{_PTB_LETTERS}{{2,}}"),                                    # l'homme, d'un
    re.compile(rf"{_PTB_LETTERS}+[aeiouyAEIOUY]'[aeiouA-Z]{_PTB_LETTERS}*"),       # qu'il, ma'am
)
_PTB_URL = re.compile(r"(?:(?:https?|ftp)://|www\.)\S+?|[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def _ptb_deleted(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _PTB_DELETED_RANGES)


def _is_word_char(ch: str) -> bool:
    cat = unicodedata.category(ch)
    return cat[0] in "LMN" or 0x055A <= ord(ch) <= 0x055F  # Armenian punctuation counts as letters


def _ptb_chunk(chunk: str, before_capital: bool = False) -> list[str]:
    """Tokenise one whitespace-free chunk: split off symbols, then finish each word.

    `before_capital`: the next chunk (possibly on a later caption: CoreNLP reads the whole file as one
    stream) is a capitalised sentence starter ("The", "It", ...), which makes "a." a sentence end.
    """
    m = _PTB_URL.fullmatch(chunk.rstrip(".,;:!?"))
    if m:
        return [m.group(0)] + list(chunk[m.end():])
    tokens: list[str] = []
    buf: list[str] = []

    def flush(last=False):
        if buf:
            tokens.extend(_ptb_word("".join(buf), before_capital=last and before_capital))
            buf.clear()

    n = len(chunk)
    for i, ch in enumerate(chunk):
        prev = chunk[i - 1] if i else ""
        nxt = chunk[i + 1] if i + 1 < n else ""
        if ch == "\u00ad":  # soft hyphen: invisible, dropped
            continue
        if ch in "\u066b\u066c" and prev.isdigit() and nxt.isdigit():  # Arabic decimal/thousands sep.
            buf.append(ch)
        elif ch in _PTB_REMOVED or ch in _PTB_ZERO_WIDTH or _ptb_deleted(ch):
            flush()
        elif ch in ",:" and not (prev.isdigit() and nxt.isdigit()):
            flush()
            tokens.append(ch)
        elif ch == "&" and not (prev.isascii() and prev.isupper() and nxt.isascii() and nxt.isupper()):
            flush()
            tokens.append(ch)
        elif ch == "#" and not nxt.isalpha():
            flush()
            tokens.append(ch)
        elif ch == "#":
            flush()
            buf.append(ch)
        elif ch in _PTB_ALWAYS_SPLIT or (
            ch not in _PTB_WORD_INTERNAL and not _is_word_char(ch)
            and unicodedata.category(ch)[0] in "PS"
        ):
            flush()
            tokens.append(_PTB_TOKEN_MAP.get(ch, ch))
        elif ch in _PTB_WORD_INTERNAL or _is_word_char(ch):
            buf.append(ch)
        else:  # control / format / private-use characters separate words
            flush()
    flush(last=True)
    return tokens


def _ptb_word(word: str, before_capital: bool = False) -> list[str]:
    """Finish a word that may carry edge punctuation, a final period, clitics or apostrophes."""
    word = word.replace("\u2019", "'")
    lead: list[str] = []
    trail: list[str] = []
    # Leading punctuation.
    while word:
        m = re.match(r"''|-+(?!\d)|_+|/|[!?]+|\.(?!\d)|'", word)  # "-3.5" stays a number
        if not m or (m.group(0) == "'" and _ptb_leading_apostrophe_word(word.rstrip("-_/!?@.'"))):
            break
        lead.append(m.group(0))
        word = word[m.end():]
    # Trailing punctuation (periods handled separately below).
    while word:
        m = re.search(r"(-+|_+|/|[!?]+|@)$", word)
        if m and m.start() > 0:
            trail.insert(0, m.group(0))
            word = word[:m.start()]
            continue
        if word.endswith(".."):
            stripped = word.rstrip(".")
            if not stripped:
                break
            dots = len(word) - len(stripped)
            if _ptb_keeps_period(stripped):  # "etc..." -> "etc." + removed dots
                trail.insert(0, "...")
                word = stripped + "."
                break
            trail.insert(0, "..." if dots >= 3 else ".")
            word = stripped + ("." if dots == 2 else "")
            continue
        if word.endswith(".") and len(word) > 1 and not _ptb_keeps_period(word[:-1]) or (
                before_capital and len(word) == 2 and word[1] == "." and not trail):
            trail.insert(0, ".")
            word = word[:-1]
            continue
        if word.endswith("'") and len(word) > 1 and word.lower() not in _PTB_KEEP_APOSTROPHE_WORDS \
                and not re.fullmatch(r"[dljyDLJY]'", word):
            trail.insert(0, "'")
            word = word[:-1]
            continue
        break
    if not word or re.fullmatch(r"[\u2010\u2011]+", word):
        return lead + trail
    return lead + _ptb_apostrophes(word) + trail


def _ptb_keeps_period(core: str) -> bool:
    if len(core) == 1:
        return core.isascii() and core.isalpha()
    low = core.lower()
    return (
        low in _PTB_ABBREVIATIONS
        or (low in _PTB_ABBREVIATIONS_CAPITALISED and core[0].isupper())
        or _PTB_ACRONYM.fullmatch(core) is not None
    )


def _ptb_leading_apostrophe_word(word: str) -> bool:
    low = word.lower()
    return (low in _PTB_KEEP_APOSTROPHE_WORDS or _PTB_DECADE.fullmatch(low) is not None
            or low.startswith("'tis") or low.startswith("'twas") or _PTB_BARE_CLITIC.fullmatch(low) is not None)


def _ptb_apostrophes(word: str) -> list[str]:
    """Clitics (do n't, it 's), special splits (can not, gon na) and word-internal apostrophes."""
    low = word.lower()
    if low in _PTB_SPECIAL_SPLITS:
        k = _PTB_SPECIAL_SPLITS[low]
        return [word[:k], word[k:]]
    if low.startswith("'tis") or low.startswith("'twas"):
        return [word[:2], *_ptb_apostrophes(word[2:])]
    if "'" not in word or word.endswith(".") or low in _PTB_KEEP_APOSTROPHE_WORDS:
        return [word]
    if word.startswith("'") and (_PTB_DECADE.fullmatch(low) or _PTB_BARE_CLITIC.fullmatch(low)):
        return [word]
    if re.fullmatch(r"[dljyDLJY]'", word):
        return [word]
    clitics: list[str] = []
    while True:
        m = _PTB_CLITIC.search(word)
        if not m or m.start() == 0 or not (_is_word_char(word[m.start() - 1]) or word[m.start() - 1] == "."):
            break
        clitics.insert(0, word[m.start():])
        word = word[:m.start()]
    if ("'" not in word or word.lower() in _PTB_KEEP_APOSTROPHE_WORDS
            or any(p.fullmatch(word) for p in _PTB_APOS_WORD)):
        return [word, *clitics]
    m = re.fullmatch(r"([dljyDLJY]')(.+)", word)
    if m:
        return [m.group(1), *_ptb_apostrophes(m.group(2)), *clitics]
    if "'n'" in word.lower():
        parts = re.split(r"(?i)('n')", word)
        return [p for p in parts if p] + clitics
    return [p for p in word.split("'") if p] + clitics


def _ptb_python(line: str, next_line: str = "") -> str:
    """Approximate `PTBTokenizer -preserveLines -lowerCase` + pycocoevalcap's punctuation filter.

    `next_line` is the next non-blank caption of the same batch (CoreNLP looks across lines).
    """
    punct = _ptb_punctuation()
    tokens: list[str] = []
    chunks = html.unescape(line).split()
    following = chunks[1:] + [(next_line.split() or [""])[0]]
    for chunk, nxt in zip(chunks, following):
        if _PTB_ABBREVIATION_BEFORE_NUMBER.fullmatch(chunk) and nxt[:1].isdigit():
            tokens.append(chunk)  # "No. 5", "ca. 1920"
        else:
            starter = "A" <= nxt[:1] <= "Z" and nxt.lower() in _PTB_SENTENCE_STARTERS
            tokens.extend(_ptb_chunk(chunk, before_capital=starter))
    lowered = (t.lower() for t in tokens)
    return " ".join(t for t in lowered if t not in punct)


_TOKENIZERS = ("auto", "ptb-java", "ptb-python")


def ptb_tokenize(texts: Sequence[str], tokenizer: str = "auto") -> tuple[list[str], str]:
    """PTB-tokenise captions, lower-cased, punctuation removed, exactly as pycocoevalcap prepares them.

    Returns `(tokenised_texts, name)` where `name` is "ptb-java" (Stanford CoreNLP 3.4.1 through java,
    the reference) or "ptb-python" (pure-Python approximation in the spirit of eval-suite §9.3b; it
    matches java on every caption of tests/fixtures/metrics/ptb_samples.txt and on ~99.9% of randomly
    composed multilingual captions). `tokenizer="auto"` uses java when it is on PATH, else the
    approximation; asking for "ptb-java" without java is an error, never a silent fallback. Texts are
    tokenised as one batch because CoreNLP reads them as one stream ("a." before "The" on the next
    line ends a sentence); keep references and predictions in separate calls, as pycocoevalcap does.
    """
    if tokenizer not in _TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {_TOKENIZERS}, got {tokenizer!r}")
    if tokenizer == "auto":
        tokenizer = "ptb-java" if java_available() else "ptb-python"
    if tokenizer == "ptb-java":
        if not java_available():
            raise RuntimeError("tokenizer='ptb-java' needs `java` on PATH (e.g. apt-get install "
                               "openjdk-17-jre-headless), or pass tokenizer='ptb-python'")
        return _ptb_java(list(texts)), tokenizer
    texts = [_JAVA_LINE_BREAKS.sub(" ", t) for t in texts]
    next_nonblank = [""] * len(texts)
    for i in range(len(texts) - 2, -1, -1):
        nxt = texts[i + 1]
        next_nonblank[i] = nxt if nxt.strip() else next_nonblank[i + 1]
    return [_ptb_python(t, n) for t, n in zip(texts, next_nonblank)], tokenizer


# =====================================================================================================
# 3. Captioning: CIDEr + BLEU-1..4 (mBLIP `caption_evaluation` + `MyCOCOEvalCap`)
# =====================================================================================================

def _caption_preprocess(text: str, lang: str) -> str:
    # mBLIP order: segment (zh/ja/th) first, then NFC (convert_xm3600_to_coco.py, caption_evaluation).
    return unicodedata.normalize("NFC", segment(text, lang))


def _check_caption_inputs(predictions: Mapping, references: Mapping) -> list:
    if not isinstance(predictions, Mapping) or not isinstance(references, Mapping):
        raise TypeError("predictions and references must be dicts keyed by image id")
    missing = [i for i in references if i not in predictions]
    extra = [i for i in predictions if i not in references]
    if missing or extra:
        raise ValueError(
            f"predictions and references must cover the same images (CIDEr's IDF depends on the image set): "
            f"{len(missing)} images without a prediction (e.g. {missing[:3]}), "
            f"{len(extra)} predictions without references (e.g. {extra[:3]})"
        )
    if not references:
        raise ValueError("references is empty: nothing to score")
    for image_id, refs in references.items():
        if isinstance(refs, str) or not isinstance(refs, Sequence) or not refs:
            raise ValueError(f"references[{image_id!r}] must be a non-empty list of strings, got {refs!r}")
        if not all(isinstance(r, str) for r in refs):
            raise ValueError(f"references[{image_id!r}] must contain only strings, got {refs!r}")
        if not isinstance(predictions[image_id], str):
            raise ValueError(f"predictions[{image_id!r}] must be a string, got {predictions[image_id]!r}")
    return list(references)


def caption_scores(
    predictions: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    lang: str,
    tokenizer: str = "auto",
) -> dict:
    """CIDEr and BLEU-1..4 of one caption per image against its references, mBLIP's way.

    Protocol (mBLIP `caption_evaluation` / `MyCOCOEvalCap`, eval-suite §2): references and predictions are
    segmented for zh/ja/th (`segment`), NFC-normalised, PTB-tokenised (lower-cased, pycocoevalcap's
    punctuation list removed; references and predictions in separate batches, as pycocoevalcap does),
    then scored with pycocoevalcap 1.2 `Bleu(4)` and `Cider()` (which is CIDEr-D: clipping, σ = 6 length
    penalty, ×10). CIDEr's IDF comes from the references of exactly the images passed in, so score a
    language's full set in one call and never average per-image scores across calls.

    Differences from mBLIP: inputs are dicts instead of a COCO json + pycocotools `loadRes` (same
    captions reach the scorers); the Java tokenizer's temp file is written outside site-packages; with
    `tokenizer="ptb-python"` (or "auto" without java) a pure-Python PTB approximation is used, and the
    result says so. METEOR/ROUGE/SPICE are not computed (mBLIP disabled them too). Pass references
    in the reference file's order: CoreNLP's sentence splitting can look at the next caption in the
    batch (see `ptb_tokenize`), and mBLIP's batch follows the file.

    Returns raw pycocoevalcap values (tables report ×100): `{"CIDEr", "Bleu_1".."Bleu_4", "tokenizer",
    "segmenter", "lang", "n_images"}`.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    image_ids = _check_caption_inputs(predictions, references)
    base = _base_language(lang)
    ref_lines = [_caption_preprocess(r, lang) for i in image_ids for r in references[i]]
    pred_lines = [_caption_preprocess(predictions[i], lang) for i in image_ids]
    ref_tok, name = ptb_tokenize(ref_lines, tokenizer)
    pred_tok, _ = ptb_tokenize(pred_lines, name)

    gts: dict = {}
    pos = 0
    for i in image_ids:
        n = len(references[i])
        gts[i] = ref_tok[pos:pos + n]
        pos += n
    res = {i: [p] for i, p in zip(image_ids, pred_tok)}

    with contextlib.redirect_stdout(io.StringIO()):  # pycocoevalcap's Bleu prints its n-gram counts
        bleu, _ = Bleu(4).compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    scores = {"CIDEr": float(cider)}
    scores.update({f"Bleu_{n + 1}": float(b) for n, b in enumerate(bleu)})
    scores.update(tokenizer=name, segmenter=SEGMENTERS.get(base, "whitespace"), lang=lang, n_images=len(image_ids))
    return scores


# =====================================================================================================
# 4. Short-answer accuracy: VQA normalisation (LAVIS `vqa_eval.py`, as copied into mBLIP `vqa_clean`)
# =====================================================================================================

_VQA_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                     "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_VQA_ARTICLES = frozenset({"a", "an", "the"})
# The official list has "Id've", "Im", "Ive" capitalised; they can never match (text is lower-cased
# first). Kept as in the protocol.
_VQA_CONTRACTIONS = dict(pair.split("=") for pair in """
aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't couldn'tve=couldn't've
couldnt've=couldn't've didnt=didn't doesnt=doesn't dont=don't hadnt=hadn't hadnt've=hadn't've
hadn'tve=hadn't've hasnt=hasn't havent=haven't hed=he'd hed've=he'd've he'dve=he'd've hes=he's howd=how'd
howll=how'll hows=how's Id've=I'd've I'dve=I'd've Im=I'm Ive=I've isnt=isn't itd=it'd itd've=it'd've
it'dve=it'd've itll=it'll let's=let's maam=ma'am mightnt=mightn't mightnt've=mightn't've
mightn'tve=mightn't've mightve=might've mustnt=mustn't mustve=must've neednt=needn't notve=not've
oclock=o'clock oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at 'ow'sat='ow's'at shant=shan't
shed've=she'd've she'dve=she'd've she's=she's shouldve=should've shouldnt=shouldn't
shouldnt've=shouldn't've shouldn'tve=shouldn't've somebody'd=somebodyd somebodyd've=somebody'd've
somebody'dve=somebody'd've somebodyll=somebody'll somebodys=somebody's someoned=someone'd
someoned've=someone'd've someone'dve=someone'd've someonell=someone'll someones=someone's
somethingd=something'd somethingd've=something'd've something'dve=something'd've somethingll=something'll
thats=that's thered=there'd thered've=there'd've there'dve=there'd've therere=there're theres=there's
theyd=they'd theyd've=they'd've they'dve=they'd've theyll=they'll theyre=they're theyve=they've
twas='twas wasnt=wasn't wed've=we'd've we'dve=we'd've weve=we've werent=weren't whatll=what'll
whatre=what're whats=what's whatve=what've whens=when's whered=where'd wheres=where's whereve=where've
whod=who'd whod've=who'd've who'dve=who'd've wholl=who'll whos=who's whove=who've whyll=why'll
whyre=why're whys=why's wont=won't wouldve=would've wouldnt=wouldn't wouldnt've=wouldn't've
wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll y'allll=y'all'll yall'd've=y'all'd've
y'alld've=y'all'd've y'all'dve=y'all'd've youd=you'd youd've=you'd've you'dve=you'd've youll=you'll
youre=you're youve=you've
""".split())
_VQA_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@",
                    "`", ",", "?", "!")
# The reference regex, typo included: "(?!<=\d)" is a lookahead that always succeeds, so the effect is
# "a period not followed by a digit".
_VQA_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
_VQA_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")


def _vqa_punctuation(text: str) -> str:
    # For each mark: deleted if it touches a space anywhere in the *original* text or the text has a
    # digit,digit pattern; otherwise replaced by a space ("t-shirt" -> "t shirt").
    out = text
    digit_comma = _VQA_DIGIT_COMMA_DIGIT.search(text) is not None
    for p in _VQA_PUNCTUATION:
        if p + " " in text or " " + p in text or digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    # Reference passes re.UNICODE (= 32) as the positional `count` of sub(): at most 32 periods go.
    return _VQA_PERIOD.sub("", out, count=re.UNICODE)


def _vqa_digits_articles(text: str) -> str:
    words = [_VQA_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in _VQA_ARTICLES]
    return " ".join(_VQA_CONTRACTIONS.get(w, w) for w in words)


def _vqa_normalise(text: str) -> str:
    return _vqa_digits_articles(_vqa_punctuation(text))


def vqa_clean(answer: str) -> str:
    """mBLIP's `vqa_clean` for one answer: the LAVIS / VQA-v2 answer normalisation.

    Steps: delete "\\n" and "\\t" (mBLIP deletes them; LAVIS and the official scorer replace them with a
    space), strip; punctuation rule over ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` (a mark is deleted if
    it is next to a space anywhere in the text or the text contains digit,digit; otherwise it becomes a
    space); periods not followed by a digit are removed (at most 32, a quirk of the reference);
    lower-case; number words none/zero..ten → digits; articles a/an/the dropped; contraction map
    ("dont" → "don't"). Examples: "Yes." → "yes", "two" → "2", "the dog" → "dog", "t-shirt" → "t shirt".
    """
    return _vqa_normalise(answer.replace("\n", "").replace("\t", "").strip())


def _check_pairs(preds: Sequence, labels: Sequence, what: str = "labels") -> None:
    if isinstance(preds, str) or isinstance(labels, str):
        raise TypeError(f"predictions and {what} must be lists, not single strings")
    if len(preds) != len(labels):
        raise ValueError(f"got {len(preds)} predictions for {len(labels)} {what}; they must align one to one")
    if not preds:
        raise ValueError("no predictions to score")


def exact_match_accuracy(preds: Sequence[str], labels: Sequence[str], clean: bool = True) -> float:
    """Fraction of predictions equal to their label: mBLIP `classification_evaluation` `acc`.

    Used for xGQA, XVNLI (labels yes/no/maybe), MaRVL (yes/no) and POPE. The prediction goes through
    `vqa_clean` (unless `clean=False`, mBLIP's `vqa_process=False`) then strip/lower; the label only
    through lower/strip. Consequence, faithful to mBLIP: labels that `vqa_clean` would change
    ("t-shirt", "at the camera") can never be matched. Raises instead of silently truncating when the
    lists differ in length.
    """
    _check_pairs(preds, labels)
    hits = sum(_classification_pred(p, clean) == l.lower().strip() for p, l in zip(preds, labels))
    return hits / len(preds)


def relaxed_accuracy(preds: Sequence[str], labels: Sequence[str], clean: bool = True) -> float:
    """mBLIP `classification_evaluation` `relaxed_acc`: the cleaned prediction starts or ends with the label.

    Same normalisation as `exact_match_accuracy`. An empty label matches everything (as in mBLIP).
    """
    _check_pairs(preds, labels)
    hits = 0
    for p, l in zip(preds, labels):
        pred, label = _classification_pred(p, clean), l.lower().strip()
        hits += pred.startswith(label) or pred.endswith(label)
    return hits / len(preds)


def _classification_pred(pred: str, clean: bool) -> str:
    return (vqa_clean(pred) if clean else pred).strip().lower()


def _f1_tokens(text: str, lang: str) -> list[str]:
    text = unicodedata.normalize("NFC", segment(text, lang)).lower()
    return "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text).split()


def token_f1(preds: Sequence[str], labels: Sequence[str], langs: Sequence[str] | str = "en") -> float:
    """Mean token-overlap F1 of each prediction with its label (SQuAD-style bag of tokens), in [0, 1].

    Not an mBLIP metric: a softer companion to `exact_match_accuracy` for free-text targets (captions, long
    answers). Both sides are word-segmented for their language (`segment`: zh, ja, th), NFC-normalised,
    lower-cased and split on whitespace and punctuation. Two empty sides score 1, one empty side 0.
    `langs` is one code for all pairs or one per pair.
    """
    _check_pairs(preds, labels)
    langs = [langs] * len(preds) if isinstance(langs, str) else list(langs)
    if len(langs) != len(preds):
        raise ValueError(f"got {len(langs)} languages for {len(preds)} predictions; pass one code or one per pair")
    total = 0.0
    for pred, label, lang in zip(preds, labels, langs):
        p, g = _f1_tokens(pred, lang), _f1_tokens(label, lang)
        if not p or not g:
            total += float(p == g)
            continue
        common = sum((Counter(p) & Counter(g)).values())
        total += 0.0 if not common else 2 * common / (len(p) + len(g))
    return total / len(preds)


_VQA_MODES = ("lavis", "mblip", "official2021")


def vqav2_accuracy(pred: str, gt_answers: Sequence[str], mode: str = "lavis") -> float:
    """VQA accuracy of one prediction against the (10) human answers, in [0, 1].

    acc = mean over the leave-one-out subsets of the answers of min(1, #matches in the subset / 3)
    (official VQA definition). The normalisation depends on `mode` (eval-suite §8.1):

    - "lavis" (default; pre-2021 official scorer, used by LAVIS / BLIP-2): "\\n"/"\\t" → space and strip,
      then the prediction is always normalised (punctuation + digits/articles, see `vqa_clean`); the
      answers get only the punctuation rule, and only when they are not all identical.
    - "mblip" (mBLIP `vqa_classification_evaluation`): prediction `vqa_clean`ed then lower/strip; answers
      only lower/strip. So "t-shirt" can never be matched.
    - "official2021" (GT-Vision-Lab/VQA HEAD since 2021): strip answers and prediction; if the answers
      are not all identical normalise both fully, otherwise compare raw strings (no lower-casing:
      "Yes." scores 0 against ten "yes").

    The benchmark score is the mean over questions (×100 in tables; the official scorer rounds it to
    two decimals).
    """
    if mode not in _VQA_MODES:
        raise ValueError(f"mode must be one of {_VQA_MODES}, got {mode!r}")
    if isinstance(gt_answers, str) or not gt_answers:
        raise ValueError(f"gt_answers must be a non-empty list of answers (VQAv2 has 10), got {gt_answers!r}")

    def unbreak(s):
        return s.replace("\n", " ").replace("\t", " ").strip()

    if mode == "mblip":
        answers = [a.lower().strip() for a in gt_answers]
        pred = vqa_clean(pred).strip().lower()
    elif mode == "lavis":
        pred = _vqa_normalise(unbreak(pred))
        answers = list(gt_answers)
        if len(set(answers)) > 1:
            answers = [_vqa_punctuation(a) for a in answers]
    else:
        answers = [unbreak(a) for a in gt_answers]
        pred = unbreak(pred)
        if len(set(answers)) > 1:
            answers = [_vqa_normalise(a) for a in answers]
            pred = _vqa_normalise(pred)

    n = len(answers)
    total = 0.0
    for i in range(n):  # leave answer i out
        hits = sum(1 for j in range(n) if j != i and answers[j] == pred)
        total += min(1.0, hits / 3)
    return total / n


def maxm_accuracy(preds: Sequence[str], answers: Sequence[Sequence[str]]) -> float:
    """MaXM accuracy: a prediction is correct if it equals any of its `processed_answers`.

    mBLIP `vqa_maxm_classification_evaluation(vqa_process=False)`: prediction and answers only
    lower/strip, no `vqa_clean`, no segmentation (so an un-spaced th/zh prediction cannot match a
    space-tokenised answer).
    """
    _check_pairs(preds, answers, "answer lists")
    hits = 0
    for p, options in zip(preds, answers):
        if isinstance(options, str) or not options:
            raise ValueError(f"each MaXM item needs a non-empty list of answers, got {options!r}")
        pred = p.strip().lower()
        hits += any(pred == a.lower().strip() for a in options)
    return hits / len(preds)


# =====================================================================================================
# 5. POPE (Li et al. 2023, AoiDragon/POPE `evaluate.py`)
# =====================================================================================================

def pope_answer(text: str) -> str:
    """The official POPE answer rule: "yes" or "no".

    Keep the text before the first ".", remove commas, split on single spaces; "no" if any word is
    exactly "No", "no" or "not", else "yes" (so "NO" and "Nope" count as yes, as in the reference).
    """
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def pope_scores(preds: Sequence[str], labels: Sequence[str]) -> dict:
    """POPE metrics: the official ones plus mBLIP's exact-match accuracy.

    Official (`evaluate.py`): predictions mapped with `pope_answer`; positive = "yes"; returns
    `accuracy`, `precision`, `recall`, `f1`, `yes_ratio` and the counts `tp fp tn fn`. Where the
    official script divides by zero (no "yes" predictions, or no "yes" labels) we return 0.0.
    mBLIP (`classification_evaluation`): `mblip_acc` = `exact_match_accuracy(preds, labels)` (vqa_clean +
    exact match), the number mBLIP's code reports. Labels must be "yes"/"no" (any case).
    """
    _check_pairs(preds, labels)
    gold = [l.lower().strip() for l in labels]
    bad = sorted({l for l in gold if l not in ("yes", "no")})
    if bad:
        raise ValueError(f"POPE labels must be 'yes' or 'no', got {bad[:5]}")
    answers = [pope_answer(p) for p in preds]
    tp = sum(a == "yes" and g == "yes" for a, g in zip(answers, gold))
    fp = sum(a == "yes" and g == "no" for a, g in zip(answers, gold))
    tn = sum(a == "no" and g == "no" for a, g in zip(answers, gold))
    fn = sum(a == "no" and g == "yes" for a, g in zip(answers, gold))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / len(gold), "precision": precision, "recall": recall, "f1": f1,
        "yes_ratio": answers.count("yes") / len(answers), "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "mblip_acc": exact_match_accuracy(preds, labels),
    }


# =====================================================================================================
# 6. CHAIR (Rohrbach et al. 2018, "Object Hallucination in Image Captioning"), as in mBLIP `chair`
# =====================================================================================================

#: The 80 COCO classes and the words that mention them (Rohrbach et al.'s list, as in mBLIP). Entries
#: are verbatim, quirks included: " motor bike" and " cheesecake" carry a leading space and "iPhone" a
#: capital, so they can never match a (lower-cased) token; duplicates are harmless.
COCO_SYNONYMS: dict[str, tuple[str, ...]] = {
    "person": (
        "person", "girl", "boy", "man", "woman", "kid", "child", "chef", "baker", "people", "adult", "rider",
        "children", "baby", "worker", "passenger", "sister", "biker", "policeman", "cop", "officer", "lady",
        "cowboy", "bride", "groom", "male", "female", "guy", "traveler", "mother", "father", "gentleman",
        "pitcher", "player", "skier", "snowboarder", "skater", "skateboarder", "person", "woman", "guy",
        "foreigner", "child", "gentleman", "caller", "offender", "coworker", "trespasser", "patient",
        "politician", "soldier", "grandchild", "serviceman", "walker", "drinker", "doctor", "bicyclist",
        "thief", "buyer", "teenager", "student", "camper", "driver", "solider", "hunter", "shopper", "villager"),
    "bicycle": ("bicycle", "bike", "bicycle", "bike", "unicycle", "minibike", "trike"),
    "car": ("car", "automobile", "van", "minivan", "sedan", "suv", "hatchback", "cab", "jeep", "coupe",
            "taxicab", "limo", "taxi"),
    "motorcycle": ("motorcycle", "scooter", " motor bike", "motor cycle", "motorbike", "scooter", "moped"),
    "airplane": ("airplane", "jetliner", "plane", "air plane", "monoplane", "aircraft", "jet", "jetliner",
                 "airbus", "biplane", "seaplane"),
    "bus": ("bus", "minibus", "trolley"),
    "train": ("train", "locomotive", "tramway", "caboose"),
    "truck": ("truck", "pickup", "lorry", "hauler", "firetruck"),
    "boat": ("boat", "ship", "liner", "sailboat", "motorboat", "dinghy", "powerboat", "speedboat", "canoe",
             "skiff", "yacht", "kayak", "catamaran", "pontoon", "houseboat", "vessel", "rowboat", "trawler",
             "ferryboat", "watercraft", "tugboat", "schooner", "barge", "ferry", "sailboard", "paddleboat",
             "lifeboat", "freighter", "steamboat", "riverboat", "battleship", "steamship"),
    "traffic light": ("traffic light", "street light", "traffic signal", "stop light", "streetlight",
                      "stoplight"),
    "fire hydrant": ("fire hydrant", "hydrant"),
    "stop sign": ("stop sign",),
    "parking meter": ("parking meter",),
    "bench": ("bench", "pew"),
    "bird": ("bird", "ostrich", "owl", "seagull", "goose", "duck", "parakeet", "falcon", "robin", "pelican",
             "waterfowl", "heron", "hummingbird", "mallard", "finch", "pigeon", "sparrow", "seabird", "osprey",
             "blackbird", "fowl", "shorebird", "woodpecker", "egret", "chickadee", "quail", "bluebird",
             "kingfisher", "buzzard", "willet", "gull", "swan", "bluejay", "flamingo", "cormorant", "parrot",
             "loon", "gosling", "waterbird", "pheasant", "rooster", "sandpiper", "crow", "raven", "turkey",
             "oriole", "cowbird", "warbler", "magpie", "peacock", "cockatiel", "lorikeet", "puffin", "vulture",
             "condor", "macaw", "peafowl", "cockatoo", "songbird"),
    "cat": ("cat", "kitten", "feline", "tabby"),
    "dog": ("dog", "puppy", "beagle", "pup", "chihuahua", "schnauzer", "dachshund", "rottweiler", "canine",
            "pitbull", "collie", "pug", "terrier", "poodle", "labrador", "doggie", "doberman", "mutt", "doggy",
            "spaniel", "bulldog", "sheepdog", "weimaraner", "corgi", "cocker", "greyhound", "retriever",
            "brindle", "hound", "whippet", "husky"),
    "horse": ("horse", "colt", "pony", "racehorse", "stallion", "equine", "mare", "foal", "palomino",
              "mustang", "clydesdale", "bronc", "bronco"),
    "sheep": ("sheep", "lamb", "ram", "lamb", "goat", "ewe"),
    "cow": ("cow", "cattle", "oxen", "ox", "calf", "cattle", "holstein", "heifer", "buffalo", "bull", "zebu",
            "bison"),
    "elephant": ("elephant",),
    "bear": ("bear", "panda"),
    "zebra": ("zebra",),
    "giraffe": ("giraffe",),
    "backpack": ("backpack", "knapsack"),
    "umbrella": ("umbrella",),
    "handbag": ("handbag", "wallet", "purse", "briefcase"),
    "tie": ("tie", "bow", "bow tie"),
    "suitcase": ("suitcase", "suit case", "luggage"),
    "frisbee": ("frisbee",),
    "skis": ("skis", "ski"),
    "snowboard": ("snowboard",),
    "sports ball": ("sports ball", "ball"),
    "kite": ("kite",),
    "baseball bat": ("baseball bat",),
    "baseball glove": ("baseball glove",),
    "skateboard": ("skateboard",),
    "surfboard": ("surfboard", "longboard", "skimboard", "shortboard", "wakeboard"),
    "tennis racket": ("tennis racket", "racket"),
    "bottle": ("bottle",),
    "wine glass": ("wine glass",),
    "cup": ("cup",),
    "fork": ("fork",),
    "knife": ("knife", "pocketknife", "knive"),
    "spoon": ("spoon",),
    "bowl": ("bowl", "container"),
    "banana": ("banana",),
    "apple": ("apple",),
    "sandwich": ("sandwich", "burger", "sub", "cheeseburger", "hamburger"),
    "orange": ("orange",),
    "broccoli": ("broccoli",),
    "carrot": ("carrot",),
    "hot dog": ("hot dog",),
    "pizza": ("pizza",),
    "donut": ("donut", "doughnut", "bagel"),
    "cake": ("cake", " cheesecake", "cupcake", "shortcake", "coffeecake", "pancake"),
    "chair": ("chair", "seat", "stool"),
    "couch": ("couch", "sofa", "recliner", "futon", "loveseat", "settee", "chesterfield"),
    "potted plant": ("potted plant", "houseplant"),
    "bed": ("bed",),
    "dining table": ("dining table", "table", "desk"),
    "toilet": ("toilet", "urinal", "commode", "toilet", "lavatory", "potty"),
    "tv": ("tv", "monitor", "televison", "television"),
    "laptop": ("laptop", "computer", "notebook", "netbook", "lenovo", "macbook", "laptop computer"),
    "mouse": ("mouse",),
    "remote": ("remote",),
    "keyboard": ("keyboard",),
    "cell phone": ("cell phone", "mobile phone", "phone", "cellphone", "telephone", "phon", "smartphone",
                   "iPhone"),
    "microwave": ("microwave",),
    "oven": ("oven", "stovetop", "stove", "stove top oven"),
    "toaster": ("toaster",),
    "sink": ("sink",),
    "refrigerator": ("refrigerator", "fridge", "fridge", "freezer"),
    "book": ("book",),
    "clock": ("clock",),
    "vase": ("vase",),
    "scissors": ("scissors",),
    "teddy bear": ("teddy bear", "teddybear"),
    "hair drier": ("hair drier", "hairdryer"),
    "toothbrush": ("toothbrush",),
}

# Two-word expressions merged before matching (after singularisation). Most map to themselves; the
# qualifier rules stop "baby bird" / "passenger jet" from firing "person". "stove top oven" has three
# words and can never match a two-word window (kept as in the protocol).
_CHAIR_DOUBLE_WORDS: dict[str, str] = {w: w for w in (
    "motor bike", "motor cycle", "air plane", "traffic light", "street light", "traffic signal", "stop light",
    "fire hydrant", "stop sign", "parking meter", "suit case", "sports ball", "baseball bat", "baseball glove",
    "tennis racket", "wine glass", "hot dog", "cell phone", "mobile phone", "teddy bear", "hair drier",
    "potted plant", "bow tie", "laptop computer", "stove top oven", "home plate", "train track")}
for _animal in ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe",
                "animal", "cub"):
    _CHAIR_DOUBLE_WORDS[f"baby {_animal}"] = _animal
    _CHAIR_DOUBLE_WORDS[f"adult {_animal}"] = _animal
for _vehicle in ("jet", "train"):
    _CHAIR_DOUBLE_WORDS[f"passenger {_vehicle}"] = _vehicle
_CHAIR_DOUBLE_WORDS.update({"bow tie": "tie", "toilet seat": "toilet", "wine glas": "wine glass"})

# word -> class; a word listed under two classes would map to the later one (none is, see tests).
_CHAIR_WORD_TO_CLASS: dict[str, str] = {w: c for c, words in COCO_SYNONYMS.items() for w in words}

# ---- singularisation: the inflector rules mBLIP uses (Bermi Ferrer's Inflector via pattern.en) ----
# Data of the protocol, applied by our own `singularize`. Quirks are part of the protocol and kept:
# "bus" -> "bu" and "glass" -> "glas" (hence the "wine glas" rule above), "ties" -> "ty"
# ("^tie"/"^pie" below are literal strings, never matched), "four" -> "fmy" (irregular "our" -> "my").
_SINGULAR_RULES = [(re.compile(p), r) for p, r in (
    (r"(?i)(.)ae$", r"\1a"), (r"(?i)(.)itis$", r"\1itis"), (r"(?i)(.)eaux$", r"\1eau"),
    (r"(?i)(quiz)zes$", r"\1"), (r"(?i)(matr)ices$", r"\1ix"), (r"(?i)(ap|vert|ind)ices$", r"\1ex"),
    (r"(?i)^(ox)en", r"\1"), (r"(?i)(alias|status)es$", r"\1"), (r"(?i)([octop|vir])i$", r"\1us"),
    (r"(?i)(cris|ax|test)es$", r"\1is"), (r"(?i)(shoe)s$", r"\1"), (r"(?i)(o)es$", r"\1"),
    (r"(?i)(bus)es$", r"\1"), (r"(?i)([m|l])ice$", r"\1ouse"), (r"(?i)(x|ch|ss|sh)es$", r"\1"),
    (r"(?i)(m)ovies$", r"\1ovie"), (r"(?i)(.)ombies$", r"\1ombie"), (r"(?i)(s)eries$", r"\1eries"),
    (r"(?i)([^aeiouy]|qu)ies$", r"\1y"),
    (r"([aeo]l)ves$", r"\1f"), (r"([^d]ea)ves$", r"\1f"), (r"arves$", "arf"), (r"erves$", "erve"),
    (r"([nlw]i)ves$", r"\1fe"), (r"(?i)([lr])ves$", r"\1f"), (r"([aeo])ves$", r"\1ve"),
    (r"(?i)(sive)s$", r"\1"), (r"(?i)(tive)s$", r"\1"), (r"(?i)(hive)s$", r"\1"), (r"(?i)([^f])ves$", r"\1fe"),
    (r"(?i)(^analy)ses$", r"\1sis"),
    (r"(?i)((a)naly|(b)a|(d)iagno|(p)arenthe|(p)rogno|(s)ynop|(t)he)ses$", r"\1\2sis"),
    (r"(?i)(.)opses$", r"\1opsis"), (r"(?i)(.)yses$", r"\1ysis"), (r"(?i)(h|d|r|o|n|b|cl|p)oses$", r"\1ose"),
    (r"(?i)(fruct|gluc|galact|lact|ket|malt|rib|sacchar|cellul)ose$", r"\1ose"), (r"(?i)(.)oses$", r"\1osis"),
    (r"(?i)([ti])a$", r"\1um"), (r"(?i)(n)ews$", r"\1ews"), (r"(?i)s$", ""),
)]
_SINGULAR_UNINFLECTED = frozenset("""
bison debris headquarters pincers trout bream diabetes herpes pliers tuna breeches djinn high-jinks
proceedings whiting britches eland homework rabies wildebeest carp elk innings salmon chassis flounder
jackanapes scissors christmas gallows mackerel series clippers georgia measles shears cod graffiti mews
species contretemps mumps swine corps news swiss""".split())
_SINGULAR_UNCOUNTABLE = frozenset("""
advice equipment happiness luggage news software bread fruit information mathematics progress
understanding butter furniture ketchup mayonnaise research water cheese garbage knowledge meat rice
electricity gravel love mustard sand""".split())
_SINGULAR_IE = frozenset("""
alergie cutie hoagie newbie softie veggie auntie doggie hottie nightie sortie weenie beanie eyrie indie
oldie stoolie yuppie birdie freebie junkie ^pie sweetie zombie bogie goonie laddie pixie techie bombie
groupie laramie quickie ^tie collie hankie lingerie reverie toughie cookie hippie meanie rookie
valkyrie""".split())
# Order matters: the first entry the word ends with wins ("women" -> "men" -> "man").
_SINGULAR_IRREGULAR = dict(pair.split(":") for pair in """
atlantes:atlas atlases:atlas axes:axe beeves:beef brethren:brother children:child corpora:corpus
corpuses:corpus ephemerides:ephemeris feet:foot ganglia:ganglion geese:goose genera:genus genii:genie
graffiti:graffito helves:helve kine:cow leaves:leaf loaves:loaf men:man mongooses:mongoose monies:money
moves:move mythoi:mythos numena:numen occipita:occiput octopodes:octopus opera:opus opuses:opus our:my
oxen:ox penes:penis penises:penis people:person sexes:sex soliloquies:soliloquy teeth:tooth testes:testis
trilbys:trilby turves:turf zoa:zoon""".split())
_PLURAL_PREPOSITIONS = frozenset("""
about before during of till above behind except off to across below for on under after beneath from
onto until among beside in out unto around besides into over upon at between near since with athwart
betwixt beyond but by""".split())


def singularize(word: str) -> str:
    """Singular of an English noun with the inflector rules CHAIR uses (quirks kept, see above).

    Order: compounds with a preposition ("mothers-in-law"), trailing apostrophe, uninflected and
    uncountable words (matched the reference's way: the *listed* word ends with the input), -ie words,
    irregular plurals (first listed suffix), then the first matching regex rule.
    """
    if "-" in word:
        head, *rest = word.split("-")
        if rest and rest[0] in _PLURAL_PREPOSITIONS:
            return singularize(head) + "-" + "-".join(rest)
    if word.endswith("'"):
        return singularize(word[:-1]) + "'s"
    low = word.lower()
    if any(x.endswith(low) for x in _SINGULAR_UNINFLECTED) or any(x.endswith(low) for x in _SINGULAR_UNCOUNTABLE):
        return word
    if any(low.endswith(x + "s") for x in _SINGULAR_IE):
        return low
    for plural, singular in _SINGULAR_IRREGULAR.items():
        if low.endswith(plural):
            return re.sub("(?i)" + plural + "$", singular, word)
    for pattern, replacement in _SINGULAR_RULES:
        if pattern.search(word):
            return pattern.sub(replacement, word)
    return word


# Stand-in for NLTK `word_tokenize` (which mBLIP calls after `nltk.download('punkt')`, a network access
# at run time). Runs of letters/digits, hyphenated compounds kept whole as NLTK keeps them. Differences
# only touch non-object tokens: clitics ("dog's" -> "dog", "s" instead of "dog", "'s") and punctuation
# (dropped instead of separate tokens), which can never be COCO words.
_CHAIR_TOKEN = re.compile(r"[^\W_]+(?:-[^\W_]+)*")


def coco_mentions(caption: str) -> list[tuple[str, str]]:
    """COCO object mentions in a caption as (word, class) pairs, in order, CHAIR's way.

    Lower-case, tokenise, singularise each token, merge two-word expressions (`_CHAIR_DOUBLE_WORDS`),
    drop "seat" when "toilet" is present, keep words in `COCO_SYNONYMS`, map each to its class.
    """
    words = [singularize(w) for w in _CHAIR_TOKEN.findall(caption.lower())]
    merged: list[str] = []
    i = 0
    while i < len(words):
        pair = " ".join(words[i:i + 2])
        if pair in _CHAIR_DOUBLE_WORDS:
            merged.append(_CHAIR_DOUBLE_WORDS[pair])
            i += 2
        else:
            merged.append(words[i])
            i += 1
    if "toilet" in merged and "seat" in merged:  # "the seat of the toilet" is not a chair
        merged = [w for w in merged if w != "seat"]
    return [(w, _CHAIR_WORD_TO_CLASS[w]) for w in merged if w in _CHAIR_WORD_TO_CLASS]


def chair_scores(captions: Mapping[Hashable, str], gt_objects: Mapping[Hashable, Iterable[str]]) -> dict:
    """CHAIR_s and CHAIR_i (Rohrbach et al. 2018) as computed by mBLIP's `chair`.

    CHAIR_i = hallucinated object mentions / all object mentions (each mention counted, repeats too);
    CHAIR_s = captions with at least one hallucinated mention / captions. A mention is hallucinated when
    its COCO class is not among the image's ground-truth classes (`gt_objects[id]`: COCO category names
    such as "dining table", e.g. from POPE's `coco_ground_truth_segmentation.json`).

    Differences from mBLIP: a regex tokenizer replaces NLTK `word_tokenize` (no `punkt` download; see
    `_CHAIR_TOKEN`); with no mentions at all CHAIR_i is 0.0 where mBLIP divides by zero; unknown class
    names in `gt_objects` raise instead of silently never matching. Also returns the counts and
    per-caption hallucinations (`{"CHAIR_s", "CHAIR_i", "n_captions", "n_hallucinated_captions",
    "n_mentions", "n_hallucinated_mentions", "hallucinated": {id: [(word, class), ...]}}`).
    """
    missing = [i for i in captions if i not in gt_objects]
    if missing:
        raise ValueError(f"{len(missing)} captions have no ground-truth objects (e.g. {missing[:3]})")
    if not captions:
        raise ValueError("no captions to score")
    n_mentions = n_hallucinated = n_bad_captions = 0
    hallucinated: dict = {}
    for image_id, caption in captions.items():
        gt = set(gt_objects[image_id])
        unknown = sorted(gt - COCO_SYNONYMS.keys())
        if unknown:
            raise ValueError(f"gt_objects[{image_id!r}] has names that are not COCO classes: {unknown}; "
                             "use the 80 COCO category names (see COCO_SYNONYMS)")
        mentions = coco_mentions(caption)
        wrong = [(w, c) for w, c in mentions if c not in gt]
        n_mentions += len(mentions)
        n_hallucinated += len(wrong)
        n_bad_captions += bool(wrong)
        if wrong:
            hallucinated[image_id] = wrong
    return {
        "CHAIR_s": n_bad_captions / len(captions),
        "CHAIR_i": n_hallucinated / n_mentions if n_mentions else 0.0,
        "n_captions": len(captions), "n_hallucinated_captions": n_bad_captions,
        "n_mentions": n_mentions, "n_hallucinated_mentions": n_hallucinated,
        "hallucinated": hallucinated,
    }


# =====================================================================================================
# 7. Aggregation over languages
# =====================================================================================================

def average(per_lang: Mapping[str, float], exclude: Iterable[str] = ("en",)) -> dict:
    """Mean of per-language scores with and without the `exclude` languages.

    IGLUE and the mBLIP tables report English separately and average the other languages
    (`results/get_<task>_zero.py`: `avg = mean(LANGS[1:])`). Returns `{"mean": over the languages not
    excluded, "mean_all": over every language, "languages": those in "mean", "excluded": those left out
    that were present}`. For XM3600, state whether `quz` is in the set: `average(s, exclude=("en", "quz"))`.
    """
    if not per_lang:
        raise ValueError("per_lang is empty: nothing to average")
    if isinstance(exclude, str):
        exclude = (exclude,)
    for lang, value in per_lang.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
            raise ValueError(f"per_lang[{lang!r}] must be a number, got {value!r}")
    excluded = sorted(l for l in per_lang if l in set(exclude))
    kept = sorted(l for l in per_lang if l not in set(exclude))
    if not kept:
        raise ValueError(f"every language in per_lang is excluded by {tuple(exclude)}: nothing left to average")
    return {
        "mean": sum(per_lang[l] for l in kept) / len(kept),
        "mean_all": sum(per_lang.values()) / len(per_lang),
        "languages": kept,
        "excluded": excluded,
    }
