"""Machine translation of the English training data with an NLLB-style seq2seq model (protocol §7).

The authors translate with ``facebook/nllb-200-distilled-1.3B``: the source language is the tokenizer's
(``eng_Latn``), the target language is forced as the first generated token (``forced_bos_token_id``), and the
checkpoint's default generation config decodes. :class:`Translator` does the same through any ``transformers``
seq2seq model with that interface (the demo's tiny "NLLB" included) and adds what a multi-million-sentence run needs:

* **dedup**: every distinct (text, target language) pair is translated once;
* **length-sorted batches** (longest first, so an out-of-memory batch shows up at once), input order restored;
* a **persistent cache** (SQLite, below) written after every batch, so nothing is translated twice and a run killed
  mid-way resumes where it stopped. Batches are planned over *all* distinct texts of a language, cached or not, so a
  resumed run generates exactly the batches the uninterrupted run would have: the final output is identical;
* **progress** (tqdm: sentences/s, ETA) and a summary (:class:`TranslationStats`);
* **sharding across processes** with ``accelerate``'s process state: under ``accelerate launch`` or ``torchrun``
  each rank translates every ``num_processes``-th batch into its own cache shard, the main process merges the
  shards, and every rank returns the full output. One process: no-op.

Cache format: ``<cache_dir>/translations.sqlite`` (WAL journal), table ``translations(setting, src_lang, tgt_lang,
source, translation, created)`` with primary key ``(setting, src_lang, tgt_lang, source)``. ``setting`` is a hash of
the model identity (hub id + resolved commit, or a content hash of a local folder's files) and the effective
generation parameters and dtype; ``settings(setting, description)`` holds the readable JSON of each. Other ranks write
``shard-rank<r>.sqlite`` with the same schema. The default ``cache_dir`` is ``$MBLIP_TRANSLATE_CACHE`` or
``~/.cache/mblip/translate``; keys are content-addressed, so one cache can serve several checkouts.

Quality helpers need no model: :func:`round_trip_chrf` (sacrebleu chrF of a back-translation against the English
source), :func:`script_check` (is the output written in the script the NLLB code promises?) and
:func:`quality_table` (per-language means). The authors filter nothing (protocol §7); :func:`keep_mask` is an opt-in
filter that keeps everything unless a threshold is given.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import hashlib
import json
import logging
import os
import re
import sqlite3
import time
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

from mblip import languages

if TYPE_CHECKING:  # heavy imports happen inside Translator, so the quality helpers stay light
    import torch

DEFAULT_MODEL = "facebook/nllb-200-distilled-1.3B"
"""The authors' translator (protocol §7; not the 600M model)."""
DEFAULT_SRC = "eng_Latn"
CACHE_ENV = "MBLIP_TRANSLATE_CACHE"
SCRIPT_MIN_FRACTION = 0.5
"""Default share of letters that must be in the expected script for :func:`script_check` to pass."""

_NLLB_CODE = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")
_HF_SNAPSHOT = re.compile(r"models--(?P<org>[^/]+)--(?P<name>[^/]+)/snapshots/(?P<commit>[0-9a-f]{40})/?$")
_SQL_CHUNK = 500  # host parameters per IN (...) query
logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------
# Stats
# ---------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class TranslationStats:
    """What one :meth:`Translator.translate_many` call did (this process's share for ``new``)."""

    requested: int = 0
    """Input sentences."""
    unique: int = 0
    """Distinct (text, target) pairs that need a translation (after dedup, without pass-through)."""
    cached: int = 0
    """Of ``unique``: found in the cache."""
    new: int = 0
    """Translated by the model in this call (by this process)."""
    passthrough: int = 0
    """Returned unchanged: target language == source language, or blank text."""
    seconds: float = 0.0
    """Wall time of the whole call."""
    generate_seconds: float = 0.0
    """Wall time of the batch loop (tokenise + generate + decode + cache write)."""

    @property
    def sentences_per_s(self) -> float:
        return self.new / self.generate_seconds if self.generate_seconds > 0 else 0.0

    def summary(self) -> str:
        head = f"translated {self.requested} sentences ({self.unique} unique, {self.passthrough} passed through): "
        if not self.new:
            return head + f"{self.cached} cached, nothing new; total {self.seconds:.1f} s"
        return head + (f"{self.cached} cached, {self.new} new in {self.generate_seconds:.1f} s "
                       f"({self.sentences_per_s:.1f} sentences/s); total {self.seconds:.1f} s")


# ---------------------------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------------------------
_SCHEMA = """
CREATE TABLE IF NOT EXISTS translations (
    setting TEXT NOT NULL, src_lang TEXT NOT NULL, tgt_lang TEXT NOT NULL, source TEXT NOT NULL,
    translation TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (setting, src_lang, tgt_lang, source)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS settings (setting TEXT PRIMARY KEY, description TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL);
"""


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mblip" / "translate")


def _connect(path: Path) -> sqlite3.Connection:
    # Autocommit mode; transactions are explicit. WAL + synchronous=NORMAL: a committed batch survives a killed process.
    conn = sqlite3.connect(str(path), timeout=120, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(_SCHEMA)
    return conn


def _chunks(seq: Sequence, n: int) -> Iterator[Sequence]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


class TranslationCache:
    """The SQLite cache (see the module docstring for the format). Rank 0 writes the main file, rank r > 0 its
    shard; everyone reads the main file (and its own shard)."""

    MAIN = "translations.sqlite"

    def __init__(self, cache_dir: str | os.PathLike, rank: int = 0):
        self.dir = Path(cache_dir).expanduser()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OSError(f"cannot create the translation cache folder {self.dir} ({e}); pass a writable cache_dir= "
                          f"or set ${CACHE_ENV}") from None
        self.rank = rank
        self.path = self.dir / self.MAIN
        self.main = _connect(self.path)
        self._shard_path = None if rank == 0 else self.dir / f"shard-rank{rank}.sqlite"
        self._shard: sqlite3.Connection | None = None

    @property
    def write(self) -> sqlite3.Connection:
        """Where this rank writes: the main file on rank 0, its shard (opened on first use) elsewhere."""
        if self._shard_path is None:
            return self.main
        if self._shard is None:
            self._shard = _connect(self._shard_path)
        return self._shard

    @property
    def _read(self) -> list[sqlite3.Connection]:
        return [self.main] if self._shard is None else [self.main, self._shard]

    def release_shard(self) -> None:
        """Close this rank's shard so the main process may merge and delete it (reopened on the next write)."""
        if self._shard is not None:
            self._shard.close()
            self._shard = None

    def lookup(self, setting: str, src: str, tgt: str, texts: Sequence[str]) -> dict[str, str]:
        """Cached translations of ``texts`` (only those present)."""
        out: dict[str, str] = {}
        for conn in self._read:
            todo = [t for t in texts if t not in out]
            for chunk in _chunks(todo, _SQL_CHUNK):
                rows = conn.execute(
                    "SELECT source, translation FROM translations WHERE setting=? AND src_lang=? AND tgt_lang=? "
                    f"AND source IN ({','.join('?' * len(chunk))})", (setting, src, tgt, *chunk))
                out.update(rows)
        return out

    def put(self, setting: str, src: str, tgt: str, pairs: Iterable[tuple[str, str]]) -> None:
        """Store (source, translation) pairs and commit (one transaction per batch)."""
        now = time.time()
        with _transaction(self.write):
            self.write.executemany("INSERT OR IGNORE INTO translations VALUES (?, ?, ?, ?, ?, ?)",
                                   [(setting, src, tgt, s, t, now) for s, t in pairs])

    def register_setting(self, setting: str, description: Mapping[str, Any]) -> None:
        with _transaction(self.write):
            self.write.execute("INSERT OR IGNORE INTO settings VALUES (?, ?)",
                               (setting, json.dumps(description, sort_keys=True)))

    def count(self, setting: str | None = None) -> int:
        """Rows in the main file (of one setting, or all)."""
        if setting is None:
            return self.main.execute("SELECT COUNT(*) FROM translations").fetchone()[0]
        return self.main.execute("SELECT COUNT(*) FROM translations WHERE setting=?", (setting,)).fetchone()[0]

    def merge_shards(self) -> int:
        """Fold every ``shard-rank*.sqlite`` into the main file and delete it (main process only). Also picks up the
        shards of a killed multi-process run. Returns the number of shards merged."""
        shards = sorted(self.dir.glob("shard-rank*.sqlite"))
        for shard in shards:
            self.main.execute("ATTACH DATABASE ? AS shard", (str(shard),))
            try:
                with _transaction(self.main):
                    self.main.execute("INSERT OR IGNORE INTO translations SELECT * FROM shard.translations")
                    self.main.execute("INSERT OR IGNORE INTO settings SELECT * FROM shard.settings")
                    self.main.execute("INSERT OR REPLACE INTO file_hashes SELECT * FROM shard.file_hashes")
            finally:
                self.main.execute("DETACH DATABASE shard")
            for suffix in ("", "-wal", "-shm"):
                Path(f"{shard}{suffix}").unlink(missing_ok=True)
        return len(shards)

    def file_sha256(self, path: Path) -> str:
        """sha256 of a file, memoised by (path, size, mtime) so a 5 GB checkpoint is hashed once."""
        st = path.stat()
        key = str(path.resolve())
        for conn in self._read:
            row = conn.execute("SELECT size, mtime_ns, sha256 FROM file_hashes WHERE path=?", (key,)).fetchone()
            if row and row[0] == st.st_size and row[1] == st.st_mtime_ns:
                return row[2]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
        digest = h.hexdigest()
        with _transaction(self.write):
            self.write.execute("INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?)",
                               (key, st.st_size, st.st_mtime_ns, digest))
        return digest

    def close(self) -> None:
        self.release_shard()
        self.main.close()


class _transaction:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


# ---------------------------------------------------------------------------------------------------------------
# Model identity
# ---------------------------------------------------------------------------------------------------------------
def _looks_like_local_path(s: str) -> bool:
    return s.startswith(("/", "./", "../", "~")) or s.count("/") > 1 or "\\" in s or s.endswith("/")


def _folder_fingerprint(folder: Path, cache: TranslationCache) -> str:
    """Content hash of a model folder: every top-level file (config, generation config, weights, tokenizer) except
    README/markdown and dot-files. Moving or copying the folder keeps its cache; changing a weight does not."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.iterdir() if p.is_file()):
        if f.name.startswith(".") or f.suffix.lower() == ".md":
            continue
        h.update(f"{f.name}\0{cache.file_sha256(f)}\n".encode())
    return h.hexdigest()


def _resolve_model(model_id_or_path: str, revision: str | None, hf_cache_dir: str | None,
                   cache: TranslationCache) -> tuple[str, str | None, dict[str, str]]:
    """(what to pass to from_pretrained, revision to pin, identity for the cache key)."""
    path = Path(model_id_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(f"translation model {str(path)!r} is a file; pass the folder that holds "
                                     f"config.json (written by model.save_pretrained(folder))")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"translation model folder {str(path)!r} has no config.json; save the model and "
                                    f"its tokenizer there with save_pretrained(folder), or pass a hub id")
        if revision is not None:  # the content hash below pins what is actually used
            logger.warning("revision=%r ignored: %s is a local folder (its files' content hash identifies it)",
                           revision, path)
        m = _HF_SNAPSHOT.search(path.resolve().as_posix())
        if m:  # a snapshot inside the Hugging Face cache: its folder name is the commit
            return str(path), None, {"model": f"{m['org']}/{m['name']}", "revision": m["commit"]}
        return str(path), None, {"model": "local-folder", "revision": "sha256:" + _folder_fingerprint(path, cache)}
    if _looks_like_local_path(model_id_or_path):
        raise FileNotFoundError(f"translation model folder {model_id_or_path!r} does not exist (cwd {os.getcwd()}); "
                                f"build or fetch it first, or pass a hub id such as {DEFAULT_MODEL!r}")
    from transformers.utils import cached_file
    try:
        config_file = cached_file(model_id_or_path, "config.json", revision=revision, cache_dir=hf_cache_dir)
    except OSError as e:
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise OSError(
            f"translation model {model_id_or_path!r} (revision {revision or 'main'}) is neither a local folder "
            f"(cwd {os.getcwd()}) nor available from the Hugging Face Hub{offline}: {e}\nFix: check the id/path, "
            f"or download it once with network access, or pass the path of a folder written by save_pretrained."
        ) from None
    m = _HF_SNAPSHOT.search(Path(config_file).parent.as_posix())
    if m:
        return model_id_or_path, m["commit"], {"model": model_id_or_path, "revision": m["commit"]}
    folder = Path(config_file).parent
    return model_id_or_path, revision, {"model": model_id_or_path,
                                        "revision": "sha256:" + _folder_fingerprint(folder, cache)}


# ---------------------------------------------------------------------------------------------------------------
# Translator
# ---------------------------------------------------------------------------------------------------------------
class Translator:
    """Cached, resumable, batched NLLB-style translation.

    Args:
        model_id_or_path: hub id (pinned to the commit it resolves to) or a local folder written by
            ``save_pretrained``. Default: the authors' ``facebook/nllb-200-distilled-1.3B``.
        revision: hub revision (branch, tag or commit); hub ids only (ignored, with a warning, for a folder).
        batch_size: sentences per ``generate`` call (the authors used 256 on a GPU).
        num_beams: beam size; ``None`` keeps the checkpoint's generation config (the paper's setting).
        max_new_tokens: output length cap; ``None`` keeps the checkpoint's generation config.
        device: e.g. ``"cpu"``, ``"cuda:1"``; ``None`` = this process's device under ``accelerate``.
        dtype: ``torch.dtype`` or its name; ``None`` = float16 on CUDA (the authors' fp16 autocast), float32 on CPU.
        cache_dir: translation cache folder; ``None`` = ``$MBLIP_TRANSLATE_CACHE`` or ``~/.cache/mblip/translate``.
        hf_cache_dir: Hugging Face download cache for hub ids (``None``: the HF default).
        progress: show a tqdm bar and print the summary (main process only).
    """

    def __init__(self, model_id_or_path: str | os.PathLike = DEFAULT_MODEL, revision: str | None = None,
                 batch_size: int = 64, num_beams: int | None = None, max_new_tokens: int | None = None,
                 device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                 cache_dir: str | os.PathLike | None = None, hf_cache_dir: str | None = None, progress: bool = True):
        import torch
        from accelerate import PartialState
        from transformers import AutoTokenizer

        for name, value, optional in (("batch_size", batch_size, False), ("num_beams", num_beams, True),
                                      ("max_new_tokens", max_new_tokens, True)):
            if optional and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Translator {name} must be a positive integer{' or None' if optional else ''}, "
                                 f"got {value!r}")
        self.model_id_or_path = str(model_id_or_path)
        self.batch_size, self.num_beams, self.max_new_tokens = batch_size, num_beams, max_new_tokens
        self.progress = progress
        self.hf_cache_dir = hf_cache_dir
        # On a machine without an accelerator, accelerate sets up CPU multi-process (gloo, e.g. under torchrun) only
        # when asked for the CPU explicitly; otherwise every rank would believe it is alone. With a GPU the shared
        # state is left as any later Accelerator() expects it.
        has_accelerator = getattr(torch, "accelerator", None) is not None and torch.accelerator.is_available()
        self.state = PartialState(cpu=not has_accelerator)
        self.device = torch.device(device) if device is not None else self.state.device
        self.dtype = _resolve_dtype(dtype, self.device)
        self.cache = TranslationCache(cache_dir if cache_dir is not None else default_cache_dir(),
                                      rank=self.state.process_index)
        self._load_from, self._revision, identity = _resolve_model(self.model_id_or_path, revision, hf_cache_dir,
                                                                   self.cache)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self._load_from, revision=self._revision,
                                                           cache_dir=hf_cache_dir)
        except (OSError, ValueError) as e:
            raise OSError(f"could not load the tokenizer of translation model {self.model_id_or_path!r}: {e}\n"
                          f"Fix: save it next to the model with tokenizer.save_pretrained(folder).") from None
        self._vocab = set(self.tokenizer.get_vocab())
        self.generation_config = self._load_generation_config()
        self.description = {
            **identity,
            "generation": _generation_params(self.generation_config),
            "dtype": str(self.dtype).removeprefix("torch."),
        }
        # The cache-key part for model + revision + decoding; `description` is its readable form.
        self.setting = hashlib.sha256(json.dumps(self.description, sort_keys=True).encode()).hexdigest()[:24]
        self.cache.register_setting(self.setting, self.description)
        self._model = None
        self._target_configs: dict[str, Any] = {}
        self.last_stats: TranslationStats | None = None

    def __repr__(self) -> str:
        return (f"Translator({self.model_id_or_path!r}, setting={self.setting}, device={self.device}, "
                f"dtype={self.description['dtype']}, batch_size={self.batch_size}, cache={self.cache.path})")

    # -- model ------------------------------------------------------------------------------------------------
    def _load_generation_config(self):
        from transformers import AutoConfig, GenerationConfig
        try:
            cfg = GenerationConfig.from_pretrained(self._load_from, revision=self._revision,
                                                   cache_dir=self.hf_cache_dir)
        except OSError:  # no generation_config.json: transformers derives it from config.json, and so do we
            cfg = GenerationConfig.from_model_config(
                AutoConfig.from_pretrained(self._load_from, revision=self._revision, cache_dir=self.hf_cache_dir))
        if self.num_beams is not None:
            cfg.num_beams = self.num_beams
        if self.max_new_tokens is not None:
            cfg.max_new_tokens = self.max_new_tokens
        return cfg

    @property
    def model(self):
        """The seq2seq model, loaded on first use (a fully cached run never loads it)."""
        if self._model is None:
            from transformers import AutoModelForSeq2SeqLM
            t0 = time.perf_counter()
            try:
                model = AutoModelForSeq2SeqLM.from_pretrained(self._load_from, revision=self._revision,
                                                              cache_dir=self.hf_cache_dir, dtype=self.dtype)
            except ValueError as e:
                raise ValueError(f"{self.model_id_or_path!r} is not a seq2seq (encoder-decoder) translation model "
                                 f"that AutoModelForSeq2SeqLM can load: {e}") from None
            self._model = model.to(self.device).eval()
            logger.info("loaded %s on %s (%s) in %.1f s", self.model_id_or_path, self.device, self.dtype,
                        time.perf_counter() - t0)
        return self._model

    def language_token_id(self, code: str, role: str = "target") -> int:
        """Token id of an NLLB language code, or a ValueError that names the code and suggests close ones."""
        if code in self._vocab:
            return self.tokenizer.convert_tokens_to_ids(code)
        hints = []
        try:
            hints.append(f"{code!r} is an mBLIP language code; its NLLB code is {languages.get(code).nllb!r} "
                         f"(mblip.languages.get({code!r}).nllb)")
        except KeyError:
            pass
        codes = sorted(t for t in self._vocab if _NLLB_CODE.match(t))
        if not codes:
            hints.append("this tokenizer has no NLLB language-code tokens at all; use an NLLB-200 model")
        else:
            close = difflib.get_close_matches(code, codes, n=4, cutoff=0.6)
            close += [c for c in codes if c[:3] == code[:3] and c not in close]
            if close:
                hints.append(f"close codes: {', '.join(close[:6])}")
        raise ValueError(f"unknown {role} language code {code!r}: not a token of the tokenizer of "
                         f"{self.model_id_or_path!r} ({len(codes)} NLLB codes known). " + "; ".join(hints))

    # -- translation ------------------------------------------------------------------------------------------
    def translate(self, texts: Sequence[str], tgt_nllb: str, src_nllb: str = DEFAULT_SRC) -> list[str]:
        """Translate ``texts`` into ``tgt_nllb`` (e.g. ``"deu_Latn"``); output aligned with the input."""
        if isinstance(texts, str):
            raise TypeError("translate() takes a list of strings, got a single string; wrap it: [text]")
        return self.translate_many([(t, tgt_nllb) for t in texts], src_nllb=src_nllb)

    def translate_many(self, requests: Iterable[tuple[str, str]], src_nllb: str = DEFAULT_SRC) -> list[str]:
        """Translate (text, target NLLB code) pairs, grouped by target language; output aligned with the input.

        Pairs whose target equals ``src_nllb``, and blank texts, are returned unchanged (the authors never translate
        the English share).
        """
        t_start = time.perf_counter()
        requests = list(requests)
        stats = TranslationStats(requested=len(requests))
        self.language_token_id(src_nllb, role="source")
        checked: set[str] = {src_nllb}
        keys: list[tuple[str, str] | None] = []
        groups: dict[str, dict[str, None]] = {}  # target -> distinct texts in first-appearance order
        for i, req in enumerate(requests):
            if not (isinstance(req, (tuple, list)) and len(req) == 2 and isinstance(req[0], str)
                    and isinstance(req[1], str)):
                raise TypeError(f"requests[{i}] must be a (text, tgt_nllb) pair of strings, got {req!r}")
            text, tgt = req
            if tgt not in checked:
                self.language_token_id(tgt)
                checked.add(tgt)
            if tgt == src_nllb or not text.strip():
                keys.append(None)
                stats.passthrough += 1
                continue
            groups.setdefault(tgt, {})[text] = None
            keys.append((tgt, text))

        # A killed multi-process run leaves shards behind: fold them in before looking anything up.
        self._sync_shards()

        results: dict[tuple[str, str], str] = {}
        for tgt, texts in groups.items():
            for text, out in self.cache.lookup(self.setting, src_nllb, tgt, list(texts)).items():
                results[(tgt, text)] = out
        stats.unique = sum(len(g) for g in groups.values())
        stats.cached = len(results)

        # Plan over all distinct texts (cached or not) so a resumed run regenerates the very same batches.
        work: list[tuple[str, list[str]]] = []
        for tgt, texts in groups.items():
            if all((tgt, t) in results for t in texts):
                continue
            for batch in self._plan_batches(list(texts), src_nllb):
                missing = [t for t in batch if (tgt, t) not in results]
                if missing:
                    work.append((tgt, missing))
        rank, world = self.state.process_index, self.state.num_processes
        mine = work[rank::world]  # round-robin: every rank gets long and short batches alike
        # Nobody writes before every rank has planned from the same cache state (else the plans could differ).
        self.state.wait_for_everyone()

        from tqdm.auto import tqdm
        total = sum(len(b) for _, b in mine)
        if mine:
            _ = self.model  # load before the clock and the progress bar start
        t_loop = time.perf_counter()
        with tqdm(total=total, unit="sent", desc="translate" + (f" [rank {rank}/{world}]" if world > 1 else ""),
                  disable=not (self.progress and self.state.is_main_process) or total == 0, dynamic_ncols=True) as bar:
            for tgt, batch in mine:
                bar.set_postfix_str(tgt, refresh=False)
                outs = self._generate(batch, src_nllb, tgt)
                self.cache.put(self.setting, src_nllb, tgt, zip(batch, outs))  # committed: survives a kill
                results.update(((tgt, t), o) for t, o in zip(batch, outs))
                stats.new += len(batch)
                bar.update(len(batch))
        stats.generate_seconds = time.perf_counter() - t_loop

        if world > 1:  # collect the other ranks' work through the merged cache
            self._sync_shards()
            for tgt, texts in groups.items():
                missing = [t for t in texts if (tgt, t) not in results]
                for text, out in self.cache.lookup(self.setting, src_nllb, tgt, missing).items():
                    results[(tgt, text)] = out

        outputs = []
        for (text, _), key in zip(requests, keys):
            if key is None:
                outputs.append(text)
            elif key in results:
                outputs.append(results[key])
            else:
                raise RuntimeError(f"no translation of {key[1]!r} into {key[0]} after the run; a rank may have "
                                   f"failed. Rerun: the cache keeps everything that was finished.")
        stats.seconds = time.perf_counter() - t_start
        self.last_stats = stats
        logger.info(stats.summary())
        if self.progress and self.state.is_main_process and stats.requested:
            tqdm.write(stats.summary())
        return outputs

    def _sync_shards(self) -> None:
        """Every rank closes its shard, the main process merges them into the main file, everyone continues."""
        self.cache.release_shard()
        self.state.wait_for_everyone()
        if self.state.is_main_process:
            self.cache.merge_shards()
        self.state.wait_for_everyone()

    def round_trip(self, texts: Sequence[str], tgt_nllb: str, src_nllb: str = DEFAULT_SRC) -> list[dict[str, str]]:
        """Translate into ``tgt_nllb`` and back: samples ``{"lang", "src", "mt", "back"}`` for :func:`quality_table`."""
        mt = self.translate(texts, tgt_nllb, src_nllb)
        back = self.translate(mt, src_nllb, src_nllb=tgt_nllb)
        return [{"lang": tgt_nllb, "src": s, "mt": m, "back": b} for s, m, b in zip(texts, mt, back)]

    def _plan_batches(self, texts: list[str], src_nllb: str) -> list[list[str]]:
        """Batches of ``batch_size`` texts by token length, longest first (ties: first appearance)."""
        self.tokenizer.src_lang = src_nllb
        lengths: list[int] = []
        for chunk in _chunks(texts, 8192):
            lengths += [len(ids) for ids in self.tokenizer(list(chunk), add_special_tokens=False)["input_ids"]]
        order = sorted(range(len(texts)), key=lambda i: (-lengths[i], i))
        return [[texts[i] for i in order[j:j + self.batch_size]] for j in range(0, len(order), self.batch_size)]

    def _config_for(self, tgt_nllb: str):
        """The generation config with the target language forced as the first generated token."""
        if tgt_nllb not in self._target_configs:
            cfg = copy.deepcopy(self.generation_config)
            cfg.forced_bos_token_id = self.language_token_id(tgt_nllb)
            self._target_configs[tgt_nllb] = cfg
        return self._target_configs[tgt_nllb]

    def _generate(self, batch: list[str], src_nllb: str, tgt_nllb: str) -> list[str]:
        import torch
        self.tokenizer.src_lang = src_nllb  # NLLB tokenizers prepend the source-language token
        enc = self.tokenizer(batch, return_tensors="pt", padding=True).to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**enc, generation_config=self._config_for(tgt_nllb))
        return self.tokenizer.batch_decode(out, skip_special_tokens=True)


def _resolve_dtype(dtype, device):
    import torch
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"Translator dtype must be a torch dtype or its name (float32, float16, bfloat16), "
                         f"got {dtype!r}")
    return value


def _generation_params(cfg) -> dict[str, Any]:
    """The generation settings that matter for the output (version stamps dropped)."""
    params = cfg.to_diff_dict()
    for k in ("transformers_version", "_from_model_config", "_commit_hash", "output_attentions",
              "output_hidden_states", "use_cache"):
        params.pop(k, None)
    return params


# ---------------------------------------------------------------------------------------------------------------
# Quality report helpers (no model needed)
# ---------------------------------------------------------------------------------------------------------------
# Unicode character-name prefix -> ISO 15924 script. Longest prefixes first so e.g. "FULLWIDTH LATIN" wins.
_SCRIPT_PREFIXES: tuple[tuple[str, str], ...] = tuple(sorted((
    ("LATIN", "Latn"), ("FULLWIDTH LATIN", "Latn"), ("CYRILLIC", "Cyrl"), ("ARABIC", "Arab"), ("GREEK", "Grek"),
    ("CJK UNIFIED IDEOGRAPH", "Hani"), ("CJK COMPATIBILITY IDEOGRAPH", "Hani"), ("HIRAGANA", "Hira"),
    ("KATAKANA", "Kana"), ("HALFWIDTH KATAKANA", "Kana"), ("HANGUL", "Hang"), ("HALFWIDTH HANGUL", "Hang"),
    ("HEBREW", "Hebr"), ("ETHIOPIC", "Ethi"), ("GEORGIAN", "Geor"), ("ARMENIAN", "Armn"), ("DEVANAGARI", "Deva"),
    ("BENGALI", "Beng"), ("GUJARATI", "Gujr"), ("GURMUKHI", "Guru"), ("KHMER", "Khmr"), ("KANNADA", "Knda"),
    ("LAO", "Laoo"), ("MALAYALAM", "Mlym"), ("MYANMAR", "Mymr"), ("SINHALA", "Sinh"), ("TAMIL", "Taml"),
    ("TELUGU", "Telu"), ("THAI", "Thai"), ("TIBETAN", "Tibt"), ("ORIYA", "Orya"), ("OL CHIKI", "Olck"),
    ("TIFINAGH", "Tfng"),
), key=lambda p: -len(p[0])))

# NLLB script suffix -> scripts its letters may use. Han-based suffixes cannot be told apart by script alone
# (Hans vs Hant): the check catches Latin/Cyrillic/... output for Chinese, not Simplified-vs-Traditional.
_SUFFIX_SCRIPTS: dict[str, frozenset[str]] = {
    **{script: frozenset({script}) for _, script in _SCRIPT_PREFIXES},
    "Hans": frozenset({"Hani"}), "Hant": frozenset({"Hani"}), "Jpan": frozenset({"Hani", "Hira", "Kana"}),
    "Kore": frozenset({"Hang", "Hani"}),
}


@functools.lru_cache(maxsize=65536)
def char_script(ch: str) -> str | None:
    """ISO 15924 script of one letter (``None`` for non-letters and scripts outside the table)."""
    if not unicodedata.category(ch).startswith("L"):
        return None
    name = unicodedata.name(ch, "")
    for prefix, script in _SCRIPT_PREFIXES:
        if name.startswith(prefix):
            return script
    return "Zzzz"


def expected_scripts(lang: str) -> frozenset[str]:
    """Scripts allowed for ``lang``: an NLLB code (``rus_Cyrl``, by its suffix) or an mBLIP code (``ru``)."""
    nllb = lang if "_" in lang else languages.get(lang).nllb
    suffix = nllb.rsplit("_", 1)[-1]
    if suffix not in _SUFFIX_SCRIPTS:
        raise ValueError(f"no script table entry for {nllb!r} (suffix {suffix!r}); known suffixes: "
                         f"{', '.join(sorted(_SUFFIX_SCRIPTS))}")
    return _SUFFIX_SCRIPTS[suffix]


def script_fraction(text: str, lang: str) -> float | None:
    """Fraction of the letters of ``text`` written in ``lang``'s script; ``None`` when it has no letters."""
    allowed = expected_scripts(lang)
    scripts = [s for s in map(char_script, text) if s is not None]
    if not scripts:
        return None
    return sum(s in allowed for s in scripts) / len(scripts)


def script_check(text: str, lang: str, min_fraction: float = SCRIPT_MIN_FRACTION) -> bool:
    """True when at least ``min_fraction`` of the letters are in the script ``lang`` promises (``rus_Cyrl`` ->
    Cyrillic). Flags wrong-script output such as untranslated English for Russian. Text without letters passes."""
    frac = script_fraction(text, lang)
    return frac is None or frac >= min_fraction


def round_trip_chrf(src: str, back: str) -> float:
    """Sentence chrF (sacrebleu, 0-100) of a back-translation against its original English source."""
    from sacrebleu.metrics import CHRF
    return CHRF().sentence_score(back, [src]).score


def _field(sample: Mapping[str, Any] | Sequence[Any], name: str, index: int):
    if isinstance(sample, Mapping):
        return sample.get(name)
    return sample[index] if len(sample) > index else None


def quality_table(samples: Iterable[Mapping[str, Any] | Sequence[Any]],
                  min_script_fraction: float = SCRIPT_MIN_FRACTION) -> list[dict[str, Any]]:
    """One row per language: ``lang``, ``n``, ``chrf_mean`` (round-trip chrF, ``None`` without back-translations),
    ``script_ok_rate`` and ``script_flagged`` (count). A sample is a mapping ``{"lang", "src", "mt", "back"}`` (as
    from :meth:`Translator.round_trip`) or a tuple in that order; ``lang`` is an NLLB or mBLIP code."""
    rows: dict[str, dict[str, Any]] = {}
    chrfs: dict[str, list[float]] = {}
    for sample in samples:
        lang, src, mt, back = (_field(sample, k, i) for i, k in enumerate(("lang", "src", "mt", "back")))
        row = rows.setdefault(lang, {"lang": lang, "n": 0, "chrf_mean": None, "script_ok_rate": 0.0,
                                     "script_flagged": 0})
        row["n"] += 1
        if not script_check(mt or "", lang, min_script_fraction):
            row["script_flagged"] += 1
        if back is not None and src is not None:
            chrfs.setdefault(lang, []).append(round_trip_chrf(src, back))
    for lang, row in rows.items():
        row["script_ok_rate"] = 1.0 - row["script_flagged"] / row["n"]
        if chrfs.get(lang):
            row["chrf_mean"] = sum(chrfs[lang]) / len(chrfs[lang])
    return list(rows.values())


def keep_mask(samples: Iterable[Mapping[str, Any] | Sequence[Any]], min_chrf: float | None = None,
              min_script_fraction: float | None = None) -> list[bool]:
    """Optional quality filter; off by default (all True), as in the paper, which filters no NLLB output.

    With ``min_script_fraction`` a translation must pass :func:`script_check`; with ``min_chrf`` its round-trip chrF
    must reach the threshold (samples without a back-translation then fail). Report how many were dropped.
    """
    mask = []
    for sample in samples:
        lang, src, mt, back = (_field(sample, k, i) for i, k in enumerate(("lang", "src", "mt", "back")))
        keep = True
        if min_script_fraction is not None:
            keep &= script_check(mt or "", lang, min_script_fraction)
        if min_chrf is not None:
            keep &= back is not None and round_trip_chrf(src or "", back) >= min_chrf
        mask.append(keep)
    return mask
