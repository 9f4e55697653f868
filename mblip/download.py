"""Fetching the paper preset's data: resumable, checksummed downloads, unpacking, a coverage report.

Three entry points:

* `download(url, dest)`: one file. Bytes go to ``dest.part``; an existing ``.part`` is resumed with an
  HTTP ``Range`` request (restarted from zero if the server ignores it); size and SHA-256 are verified
  before an atomic rename, so ``dest`` is either absent, the old file, or the complete verified new one.
* `fetch_all(sources, root)`: the manifest (`mblip.sources`) in parallel. Each source ends as
  ``ok`` (downloaded now), ``cached`` (already there and verified), ``local`` (linked or copied from the
  user's ``local`` folder), ``failed`` (with the reason) or ``skipped`` (no public URL; the note says where to
  get it). One failure never stops the others; ``COVERAGE.md`` + ``coverage.json`` are written even when
  something fails or the run is interrupted. Checksums unknown in advance are trusted on first use: recorded
  in ``CHECKSUMS.sha256`` (``sha256sum -c`` format) and verified on every later run.
* `download_images(url_list, out_dir)`: the authors' Web CapFilt image download (protocol §5,
  ``data/pretrain/download_images.py``): alpha composited on white, longest side downscaled to 256 (bicubic)
  and padded with white to 256x256, JPEG quality 95. Unreadable or unreachable images are counted and listed,
  never replaced by blanks; a rerun skips images already on disk.

Standard library only for the network (urllib), so it works wherever Python does; proxies come from the
usual ``https_proxy``/``no_proxy`` variables.
"""
from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import re
import shutil
import tarfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, as_completed, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Sequence

from tqdm.auto import tqdm

from mblip.sources import Source, select

USER_AGENT = "mblip-fetch/0.1 (+https://github.com/; python-urllib)"
CHUNK = 1 << 20
CHECKSUMS = "CHECKSUMS.sha256"
REPORT_MD = "COVERAGE.md"
REPORT_JSON = "coverage.json"
STATUSES = ("ok", "cached", "local", "failed", "skipped")
_RETRY_HTTP = {408, 425, 429, 500, 502, 503, 504}
_LINKED = {"hardlink": "hardlinked (or copied, across file systems)", "symlink": "symlinked", "copy": "copied"}
_LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"


class DownloadError(RuntimeError):
    """A file that could not be fetched; the message names the URL or file and what to do."""


class ChecksumError(DownloadError):
    """Bytes whose size or SHA-256 differ from the expected ones."""


class _Retry(Exception):
    """A transient failure (timeout, dropped connection, 5xx): try again, resuming from the .part."""


# ============================================================================================ one file
@dataclass
class Fetched:
    path: Path
    sha256: str
    size: int
    downloaded: int
    """Bytes transferred by this call (0 = nothing fetched)."""
    resumed_from: int = 0


def _hasher(path: Path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h


def sha256_file(path: str | Path) -> str:
    return _hasher(Path(path)).hexdigest()


def download(url: str, dest: str | Path, *, sha256: str | None = None, size: int | None = None,
             retries: int = 3, timeout: float = 30, progress: bool = True, backoff: float = 1.0) -> Path:
    """Download ``url`` to ``dest`` (resumable, verified, atomic) and return ``dest``.

    If ``dest`` already exists and matches ``sha256``/``size`` nothing is fetched; if no expectation is given
    an existing ``dest`` is returned as is. A mismatching download raises `ChecksumError` and leaves ``dest``
    untouched. Transient failures are retried ``retries`` times (``backoff`` s, doubling), each retry resuming
    from ``dest.part``.
    """
    return _download(url, Path(dest), sha256=sha256, size=size, retries=retries, timeout=timeout,
                     progress=progress, backoff=backoff).path


def _download(url, dest: Path, *, sha256=None, size=None, retries=3, timeout=30.0, progress=True,
              backoff=1.0, stop: threading.Event | None = None) -> Fetched:
    if dest.is_file():
        if sha256 is None and size is None:
            return Fetched(dest, sha256_file(dest), dest.stat().st_size, 0)
        if size is None or dest.stat().st_size == size:
            actual = sha256_file(dest)
            if sha256 is None or actual == sha256:
                return Fetched(dest, actual, dest.stat().st_size, 0)
        # else: fetch a replacement into .part; dest stays as it is unless the replacement verifies
    dest.parent.mkdir(parents=True, exist_ok=True)
    attempt = 0
    while True:
        try:
            return _attempt(url, dest, sha256, size, timeout, progress, stop)
        except _Retry as e:
            attempt += 1
            part = _part(dest)
            if attempt > retries:
                kept = (f"; the {part.stat().st_size:,} bytes in {part} are kept and the next run resumes from them"
                        if part.exists() and part.stat().st_size else "")
                raise DownloadError(f"{url}: failed after {attempt} attempt(s): {e}{kept}. Check the network "
                                    f"(or a proxy in https_proxy) and run fetch again.") from None
            time.sleep(backoff * 2 ** (attempt - 1))


def _part(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes 100-999/1000`` -> (100, 1000); ``bytes */1000`` -> (None, 1000)."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


def _attempt(url, dest: Path, sha256, size, timeout, progress, stop) -> Fetched:
    part = _part(dest)
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:  # a stale .part from another version of the file
        part.unlink()
        have = 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    opener = urllib.request.build_opener()  # built per call: proxy settings are read from the environment now
    try:
        resp = opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and have:  # asked for bytes past the end: the .part may already be complete
            _, total = _content_range(e.headers.get("Content-Range"))
            if total == have or (total is None and size == have):
                return _finish(url, dest, _hasher(part), have, 0, have, sha256, size)
            part.unlink()
            raise _Retry(f"server refused to resume at byte {have:,} (HTTP 416); restarting from zero") from None
        if e.code in _RETRY_HTTP:
            raise _Retry(f"HTTP {e.code} {e.reason}") from None
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason} (for {dest}). The file has moved or is not public: "
                            f"check the URL in mblip/sources.py, or download it by hand to {dest}.") from None
    except (urllib.error.URLError, OSError) as e:  # DNS, refused, timeout
        raise _Retry(f"{type(e).__name__}: {getattr(e, 'reason', e)}") from None

    with resp:
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if have and resp.status == 206:
            start, total = _content_range(resp.headers.get("Content-Range"))
            if start != have:
                part.unlink()
                raise _Retry(f"server answered the resume request with bytes from {start}; restarting from zero")
            mode, hasher = "ab", _hasher(part)
        else:  # full body: either a fresh download or a server that ignores Range (restart from zero)
            have, total, mode, hasher = 0, length, "wb", hashlib.sha256()
        expected_total = total if total is not None else size
        got = 0
        bar = tqdm(total=expected_total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=dest.name[:40], disable=not progress, leave=False)
        try:
            with open(part, mode) as f:
                while True:
                    if stop is not None and stop.is_set():
                        raise DownloadError(f"{url}: interrupted; {part} is kept and the next run resumes from it")
                    try:
                        chunk = resp.read(CHUNK)
                    except (OSError, ValueError, http.client.HTTPException) as e:
                        raise _Retry(f"connection lost after {have + got:,} bytes ({type(e).__name__})") from None
                    if not chunk:
                        break
                    f.write(chunk)
                    hasher.update(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
        finally:
            bar.close()
        if length is not None and got < length:
            raise _Retry(f"connection closed after {have + got:,} of {have + length:,} bytes")
    return _finish(url, dest, hasher, have + got, got, have, sha256, size)


def _finish(url, dest: Path, hasher, total, got, resumed_from, sha256, size) -> Fetched:
    part = _part(dest)
    actual = hasher.hexdigest()
    problem = None
    if size is not None and total != size:
        problem = f"size is {total:,} bytes, expected {size:,}"
    elif sha256 is not None and actual != sha256:
        problem = f"SHA-256 is {actual}, expected {sha256}"
    if problem is None and total < 1024:
        with open(part, "rb") as f:
            if f.read(len(_LFS_POINTER)) == _LFS_POINTER:
                part.unlink()
                raise DownloadError(
                    f"{url}: the server sent a Git LFS pointer, not the file. For GitHub use "
                    f"https://media.githubusercontent.com/media/<owner>/<repo>/<ref>/<path> in mblip/sources.py, "
                    f"or download the file by hand to {dest}.")
    if problem:
        part.unlink(missing_ok=True)
        if resumed_from:  # the old part may come from an earlier version of the file: retry from zero
            raise _Retry(f"after resuming at byte {resumed_from:,} the {problem}; the partial file was discarded "
                         f"so the next try starts from zero")
        raise ChecksumError(f"{url}: the downloaded {dest.name} {problem}. {dest} was left as it was. "
                            f"If upstream changed the file on purpose, update the checksum (mblip/sources.py or "
                            f"{CHECKSUMS}); otherwise retry later or download it by hand.")
    os.replace(part, dest)
    return Fetched(dest, actual, total, got, resumed_from)


# ============================================================================================ checksums (TOFU)
class Checksums:
    """``CHECKSUMS.sha256`` under the data root: ``<sha256>  <relative path>`` per line (``sha256sum -c`` works)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._d: dict[str, str] = {}
        if self.path.exists():
            for i, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip() or line.startswith("#"):
                    continue
                m = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)", line.rstrip())
                if not m:
                    raise ValueError(f"{self.path} line {i}: expected '<64 hex digits>  <path>', got {line!r}. "
                                     f"Fix or delete that line (the file is re-hashed and recorded on the next fetch).")
                self._d[m.group(2)] = m.group(1)

    def get(self, rel: str) -> str | None:
        return self._d.get(rel)

    def record(self, rel: str, sha: str) -> None:
        with self._lock:
            if self._d.get(rel) == sha:
                return
            self._d[rel] = sha
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(f"{h}  {p}\n" for p, h in sorted(self._d.items())), encoding="utf-8")
            os.replace(tmp, self.path)


# ============================================================================================ unpack, link
def unpack(archive: str | Path, target: str | Path, fmt: Literal["zip", "tgz"], *, stamp: str | None = None) -> bool:
    """Unpack ``archive`` into ``target``; return False if it was already unpacked (idempotent).

    A marker ``target/.<archive name>.done`` holds ``stamp`` (the archive's SHA-256): a changed archive is
    unpacked again. Extraction goes to a temporary folder first, so an interrupted unpack leaves no half tree
    behind the marker. A single top-level folder named like ``target`` is not repeated inside it.
    """
    archive, target = Path(archive), Path(target)
    stamp = stamp or f"size={archive.stat().st_size}"
    marker = target / f".{archive.name}.done"
    if marker.is_file() and marker.read_text(encoding="utf-8").strip() == stamp:
        return False
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / f".{archive.name}.unpacking"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        if fmt == "zip":
            with zipfile.ZipFile(archive) as z:  # zipfile drops absolute paths and '..' itself
                z.extractall(tmp)
        elif fmt == "tgz":
            with tarfile.open(archive, "r:*") as t:
                t.extractall(tmp, filter="data")  # refuses links/paths that escape tmp
        else:
            raise ValueError(f"{archive}: unknown archive format {fmt!r}; expected 'zip' or 'tgz'")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DownloadError(f"{archive}: cannot unpack ({type(e).__name__}: {e}). The archive is truncated or "
                            f"corrupt: delete it (and its line in {CHECKSUMS}) and fetch again.") from None
    entries = list(tmp.iterdir())
    src = entries[0] if len(entries) == 1 and entries[0].is_dir() and entries[0].name == target.name else tmp
    for e in list(src.iterdir()):
        dst = target / e.name
        if dst.is_dir() and not dst.is_symlink():
            shutil.rmtree(dst)
        elif dst.exists() or dst.is_symlink():
            dst.unlink()
        os.replace(e, dst)
    shutil.rmtree(tmp)
    marker.write_text(stamp + "\n", encoding="utf-8")
    return True


def _place(src: Path, dst: Path, how: str) -> None:
    """Put file ``src`` at ``dst``: hardlink (falls back to copy across file systems), symlink or copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() and os.path.samefile(src, dst):
        return
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    if how == "symlink":
        dst.symlink_to(src.resolve())
        return
    if how == "hardlink":
        try:
            os.link(src, dst)
            return
        except OSError:
            pass  # other file system or no permission: copy
    tmp = dst.with_name(dst.name + ".part")
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def _place_tree(src: Path, dst: Path, how: str) -> int:
    """Mirror folder ``src`` at ``dst`` (symlink: one link for the folder; else per file). Returns files placed."""
    if how == "symlink":
        if dst.is_symlink() or not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.is_symlink():
                dst.unlink()
            dst.symlink_to(src.resolve(), target_is_directory=True)
            return sum(len(f) for _, _, f in os.walk(src))
    n = 0
    for d, _, files in os.walk(src):
        for name in files:
            s = Path(d) / name
            _place(s, dst / s.relative_to(src), how)
            n += 1
    return n


def _nonempty_dir(p: Path) -> bool:
    return p.is_dir() and any(x for x in p.iterdir() if not x.name.startswith("."))


# ============================================================================================ coverage report
@dataclass
class Result:
    name: str
    status: Literal["ok", "cached", "local", "failed", "skipped"]
    dest: str
    reason: str = ""
    """Why it failed / was skipped, or how it was satisfied."""
    kind: str = ""
    benchmark: str = ""
    required_for: tuple[str, ...] = ()
    url: str | None = None
    note: str = ""
    bytes: int = 0
    """Size of the file on disk (0 for folders and missing files)."""
    sha256: str | None = None


def _on_disk(r: Result) -> str:
    return "present" if r.status in ("ok", "cached", "local") else r.status


@dataclass
class CoverageReport:
    """What `fetch_all` got, per source; ``missing`` lists exactly what could not be fetched and why."""
    root: str
    results: list[Result] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.results) for s in STATUSES}

    @property
    def missing(self) -> list[Result]:
        return [r for r in self.results if r.status in ("failed", "skipped")]

    @property
    def complete(self) -> bool:
        """True when every selected source is on disk."""
        return not self.missing

    def affected(self) -> dict[str, list[str]]:
        """Tag (benchmark / task) -> names of its missing inputs."""
        out: dict[str, list[str]] = {}
        for r in self.missing:
            for tag in r.required_for or (r.benchmark,):
                out.setdefault(tag, []).append(r.name)
        return dict(sorted(out.items()))

    def summary(self) -> str:
        c = self.counts
        return ", ".join(f"{c[s]} {s}" for s in STATUSES if c[s]) or "nothing selected"

    # The written files describe the state on disk, not this run: ok / cached / local are all "present" and
    # carry no run details, and there are no timestamps. A rerun that changes nothing rewrites the same bytes,
    # so the report can live in the DVC-tracked data folder without invalidating anything.
    def to_dict(self) -> dict:
        def row(r: Result) -> dict:
            d = {"name": r.name, "status": _on_disk(r), "dest": r.dest, "kind": r.kind, "benchmark": r.benchmark,
                 "required_for": list(r.required_for), "url": r.url, "bytes": r.bytes, "sha256": r.sha256}
            if r.status in ("failed", "skipped"):
                d.update(reason=r.reason, note=r.note)
            return d
        counts = {k: sum(_on_disk(r) == k for r in self.results) for k in ("present", "failed", "skipped")}
        return {"root": self.root, "counts": counts, "affected": self.affected(),
                "missing": [row(r) for r in self.missing], "results": [row(r) for r in self.results]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    def to_markdown(self) -> str:
        d = self.to_dict()
        esc = lambda s: re.sub(r"([|<>])", r"\\\1", str(s)).replace("\n", " ")
        summary = ", ".join(f"{n} {k}" for k, n in d["counts"].items() if n) or "nothing selected"
        lines = ["# Data coverage (`mblip fetch`)", "", f"Root `{self.root}`: {summary}.", ""]
        if self.missing:
            lines += ["## Not fetched", "", "| source | status | why | what to do | needed for |",
                      "|---|---|---|---|---|"]
            for r in self.missing:
                todo = r.note or (f"source: {r.url}" if r.url else "-")
                lines.append(f"| `{r.name}` | {r.status} | {esc(r.reason)} | {esc(todo)} | "
                             f"{', '.join(r.required_for) or r.benchmark} |")
            lines += ["", "## Benchmarks and tasks with missing inputs", ""]
            lines += [f"- **{tag}**: {', '.join(f'`{n}`' for n in names)}" for tag, names in self.affected().items()]
            lines.append("")
        else:
            lines += ["Everything selected is on disk.", ""]
        lines += ["## All sources", "", "| source | status | kind | dest | MB |", "|---|---|---|---|---|"]
        for r in d["results"]:
            mb = f"{r['bytes'] / 1e6:.1f}" if r["bytes"] else ""
            lines.append(f"| `{r['name']}` | {r['status']} | {r['kind']} | `{r['dest']}` | {mb} |")
        return "\n".join(lines) + "\n"

    def write(self, root: str | Path) -> tuple[Path, Path]:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        md, js = root / REPORT_MD, root / REPORT_JSON
        md.write_text(self.to_markdown(), encoding="utf-8")
        js.write_text(self.to_json(), encoding="utf-8")
        return md, js


# ============================================================================================ the manifest
def fetch_all(sources: Iterable[Source], root: str | Path, *, local: str | Path | None = None, workers: int = 4,
              only: Iterable[str] | str | None = None, link: Literal["hardlink", "symlink", "copy"] = "hardlink",
              download_missing: bool = True, retries: int = 3, timeout: float = 30,
              progress: bool = True) -> CoverageReport:
    """Fetch every (selected) source under ``root`` (the paper data root, ``data/paper``) in parallel.

    ``local``: a folder with the same relative layout that the user already has; files found there are
    linked (``link``) instead of downloaded, and sources missing there are downloaded unless
    ``download_missing=False``. ``only``: names (globs), benchmarks or tags, see `mblip.sources.select`.
    Always writes ``COVERAGE.md`` and ``coverage.json`` under ``root``, also when a source fails or on Ctrl-C.
    """
    if link not in ("hardlink", "symlink", "copy"):
        raise ValueError(f"link must be 'hardlink', 'symlink' or 'copy', got {link!r}")
    if workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers}")
    chosen = select(sources, only)
    for attr in ("name", "dest"):
        values = [getattr(s, attr) for s in chosen]
        dup = sorted({v for v in values if values.count(v) > 1})
        if dup:
            raise ValueError(f"two sources share the {attr} {dup[0]!r}; every source needs its own")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if local is not None:
        local = Path(local)
        if not local.is_dir():
            raise FileNotFoundError(f"local folder {local} does not exist; pass the folder that holds your copy "
                                    f"of the paper data (same layout as {root}), or leave it out to download")
    store = Checksums(root / CHECKSUMS)
    stop = threading.Event()
    results: dict[str, Result] = {}
    kw = dict(root=root, store=store, local=local, link=link, download_missing=download_missing,
              retries=retries, timeout=timeout, progress=progress, stop=stop)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch")
    bar = tqdm(total=len(chosen), desc="fetch", unit="file", disable=not progress)
    futures = []
    try:
        futures = [pool.submit(_fetch_one, s, **kw) for s in chosen]
        for fut in as_completed(futures):
            r = fut.result()
            results[r.name] = r
            bar.update(1)
            if progress:
                bar.write(f"{r.status:>7}  {r.name}" + (f"  ({r.reason})" if r.reason else ""))
    except BaseException:
        stop.set()  # running downloads stop at their next chunk; their .part files stay for the next run
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        for fut in futures:  # finished while we were being interrupted
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                results.setdefault(fut.result().name, fut.result())
        for s in chosen:
            if s.name not in results:
                results[s.name] = _result(s, "failed", "interrupted before it finished; run fetch again to resume")
        report = CoverageReport(str(root), [results[s.name] for s in chosen])
        report.write(root)
    return report


def _result(s: Source, status, reason="", *, path: Path | None = None, sha=None) -> Result:
    size = path.stat().st_size if path is not None and path.is_file() else 0
    return Result(s.name, status, s.dest, reason, s.kind, s.benchmark, tuple(s.required_for), s.url, s.note,
                  size, sha)


def _fetch_one(s: Source, *, root: Path, store: Checksums, local: Path | None, link: str, download_missing: bool,
               retries: int, timeout: float, progress: bool, stop: threading.Event) -> Result:
    """One source -> one Result. Never raises: a failure is a Result the report lists."""
    try:
        return _fetch_one_inner(s, root, store, local, link, download_missing, retries, timeout, progress, stop)
    except Exception as e:  # noqa: BLE001 - the report must list every failure, whatever it is
        msg = str(e) if isinstance(e, (DownloadError, OSError, ValueError)) else f"{type(e).__name__}: {e}"
        return _result(s, "failed", msg)


def _fetch_one_inner(s, root, store, local, link, download_missing, retries, timeout, progress, stop) -> Result:
    dest = root / s.dest
    if s.folder:  # user-provided folder: check, or mirror it from `local`
        if _nonempty_dir(dest):
            return _result(s, "cached", "folder present")
        if local is not None and _nonempty_dir(local / s.dest):
            n = _place_tree(local / s.dest, dest, link)
            return _result(s, "local", f"{n:,} files {_LINKED[link]} from {local / s.dest}")
        return _result(s, "skipped", f"user-provided folder {dest} is missing")

    pinned = s.sha256
    expected = pinned or store.get(s.dest)
    who = "mblip/sources.py pins" if pinned else f"{CHECKSUMS} recorded at first download"

    def verify(path: Path) -> str:
        actual = sha256_file(path)
        if expected is not None and actual != expected:
            raise ChecksumError(
                f"{path}: SHA-256 is {actual} but {who} {expected}. The file changed since (or is corrupt); it was "
                f"not replaced. Fix: if upstream updated it on purpose, delete {dest} and its line in "
                f"{root / CHECKSUMS}, then fetch again; otherwise delete {dest} to download it again.")
        if s.size is not None and path.stat().st_size != s.size:
            raise ChecksumError(f"{path}: size is {path.stat().st_size:,} bytes, mblip/sources.py says {s.size:,}. "
                                f"Delete it and fetch again.")
        return actual

    def finish(status, reason, sha) -> Result:
        store.record(s.dest, sha)
        if s.unpack:
            did = unpack(dest, root / s.unpacked, s.unpack, stamp=sha)
            reason = (reason + "; " if reason else "") + ("unpacked" if did else "already unpacked")
        return _result(s, status, reason, path=dest, sha=sha)

    # 1. already on disk: verify (TOFU), make sure it is unpacked
    if dest.is_file():
        return finish("cached", "", verify(dest))
    if s.unpack and not dest.exists():
        target = root / s.unpacked
        marker = target / f".{Path(s.dest).name}.done"
        stamp = marker.read_text(encoding="utf-8").strip() if marker.is_file() else None
        if stamp is not None and (expected is None or stamp in (expected, "local")):
            return _result(s, "cached", f"archive not kept; {s.unpacked}/ was unpacked" +
                           (" from the local folder" if stamp == "local" else ""))
        if target.is_symlink() and _nonempty_dir(target):
            return _result(s, "cached", f"{s.unpacked}/ links to {os.readlink(target)}")
    # 2. the user's local copy
    if local is not None:
        lf = local / s.dest
        if lf.is_file():
            sha = verify(lf)
            _place(lf, dest, link)
            return finish("local", f"{_LINKED[link]} from {lf}", sha)
        if s.unpack and s.unpack_to is None and _nonempty_dir(local / s.unpacked):
            target = root / s.unpacked
            n = _place_tree(local / s.unpacked, target, link)
            if not target.is_symlink():  # (a marker inside a symlinked folder would land in the user's copy)
                (target / f".{Path(s.dest).name}.done").write_text("local\n", encoding="utf-8")
            return _result(s, "local", f"unpacked folder: {n:,} files {_LINKED[link]} from {local / s.unpacked}")
        if not download_missing:
            return _result(s, "skipped", f"not in the local folder ({lf})")
    # 3. download
    if s.url is None:
        return _result(s, "skipped", "no public URL")
    f = _download(s.url, dest, sha256=expected, size=s.size, retries=retries, timeout=timeout,
                  progress=progress, stop=stop)
    how = f"resumed at byte {f.resumed_from:,}" if f.resumed_from else ""
    return finish("ok", how, f.sha256)


# ============================================================================================ images from URL lists
@dataclass
class ImageReport:
    """Outcome of `download_images`; ``failed`` lists (id, url, reason) of every image not on disk."""
    out_dir: str
    total: int = 0
    ok: int = 0
    cached: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def n_failed(self) -> int:
        return len(self.failed)

    def summary(self) -> str:
        return (f"{self.ok + self.cached:,}/{self.total:,} images on disk ({self.ok:,} new, {self.cached:,} already "
                f"there), {self.n_failed:,} failed")

    def to_json(self) -> str:
        return json.dumps({"out_dir": self.out_dir, "total": self.total, "ok": self.ok, "cached": self.cached,
                           "n_failed": self.n_failed,
                           "failed": [{"id": i, "url": u, "reason": r} for i, u, r in self.failed]},
                          indent=1, ensure_ascii=False) + "\n"


_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def prepare_image(data: bytes, resize_longest: int = 256, pad_white: bool = True) -> bytes:
    """The authors' Web CapFilt image preprocessing (protocol §5) -> JPEG bytes (quality 95).

    Alpha is composited on white (``a/255*c + 255 - a``, rounded); an image whose longest side exceeds
    ``resize_longest`` is downscaled to it (bicubic) and, with ``pad_white``, centred on a white square.
    Like the authors' script, smaller images are kept at their size (no upscaling, no padding).
    Differences: Pillow's bicubic (antialiased) instead of OpenCV ``INTER_CUBIC``; truncated files are errors.
    Raises on bytes that are not a decodable image.
    """
    from PIL import Image  # heavy import only where images are handled
    import numpy as np

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
            a = np.asarray(im.convert("RGBA"), dtype=np.float64)
            alpha = a[..., 3:4]
            rgb = np.rint(np.clip(alpha / 255 * a[..., :3] + 255 - alpha, 0, 255)).astype(np.uint8)
            img = Image.fromarray(rgb, "RGB")
        else:
            img = im.convert("RGB")
    w, h = img.size
    side = resize_longest
    if side and max(w, h) > side:
        scale = side / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        img = img.resize((nw, nh), Image.Resampling.BICUBIC)
        if pad_white:
            canvas = Image.new("RGB", (side, side), (255, 255, 255))
            canvas.paste(img, ((side - nw) // 2, (side - nh) // 2))
            img = canvas
    out = io.BytesIO()
    img.save(out, "JPEG", quality=95)
    return out.getvalue()


def _valid_jpeg(path: Path) -> bool:
    """Cheap check that a previous run finished this file (files are written atomically; SOI + EOI markers)."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(-2, os.SEEK_END)
            return head == b"\xff\xd8" and f.read(2) == b"\xff\xd9"
    except OSError:
        return False


def download_images(url_list: Sequence[tuple[str, str]], out_dir: str | Path, workers: int = 16, timeout: float = 10,
                    resize_longest: int = 256, pad_white: bool = True, *, progress: bool = True,
                    report_path: str | Path | None = None) -> ImageReport:
    """Download ``(id, url)`` images to ``out_dir/<id>.jpg``, preprocessed by `prepare_image`.

    Parallel (``workers`` threads, the authors used 16 and a 10 s timeout) and idempotent: images already on
    disk are skipped, failed ones are tried again on the next run. Nothing is written for a failed image; the
    report (also written to ``report_path``, default ``<out_dir>.report.json``) lists each with its reason.
    """
    out_dir = Path(out_dir)
    ids = [str(i) for i, _ in url_list]
    bad = [i for i in ids if not _ID.fullmatch(i)]
    if bad:
        raise ValueError(f"image ids become file names and must match {_ID.pattern}; got {bad[:5]}"
                         f"{' ...' if len(bad) > 5 else ''}")
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"image ids must be unique; repeated: {dup}")
    out_dir.mkdir(parents=True, exist_ok=True)
    report = ImageReport(str(out_dir), total=len(url_list))
    opener = urllib.request.build_opener()

    def one(image_id: str, url: str) -> tuple[str, str]:
        path = out_dir / f"{image_id}.jpg"
        if _valid_jpeg(path):
            return "cached", ""
        try:
            with opener.open(urllib.request.Request(url, headers={"User-Agent": USER_AGENT}), timeout=timeout) as r:
                data = r.read()
                n = r.headers.get("Content-Length")
                if n and n.isdigit() and len(data) < int(n):
                    return "failed", f"download: connection closed after {len(data):,} of {int(n):,} bytes"
        except urllib.error.HTTPError as e:
            return "failed", f"download: HTTP {e.code} {e.reason}"
        except Exception as e:  # noqa: BLE001 - timeouts, DNS, resets: counted, listed, retried on the next run
            return "failed", f"download: {type(e).__name__}: {getattr(e, 'reason', e)}"
        try:
            jpg = prepare_image(data, resize_longest, pad_white)
        except Exception as e:  # noqa: BLE001 - any decoder error means: not an image we can use
            return "failed", f"unreadable image ({len(data):,} bytes): {type(e).__name__}: {e}"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(jpg)
        os.replace(tmp, path)
        return "ok", ""

    def collect(done) -> None:
        for fut in done:
            key = pending.pop(fut)
            status, reason = fut.result()
            if status == "ok":
                report.ok += 1
            elif status == "cached":
                report.cached += 1
            else:
                report.failed.append((*key, reason))
                bar.set_postfix(failed=report.n_failed, refresh=False)
            bar.update(1)

    # At most a few batches in flight: millions of queued futures would cost gigabytes of memory.
    pending: dict = {}
    bar = tqdm(total=len(url_list), desc="images", unit="img", disable=not progress, smoothing=0.05)
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="img") as pool:
            for image_id, url in url_list:
                if len(pending) >= 4 * workers:
                    collect(wait(pending, return_when=FIRST_COMPLETED).done)
                pending[pool.submit(one, str(image_id), url)] = (str(image_id), url)
            collect(wait(pending).done)
    finally:
        bar.close()
        report.failed.sort()
        rp = Path(report_path) if report_path is not None else out_dir.with_name(out_dir.name + ".report.json")
        rp.write_text(report.to_json(), encoding="utf-8")
    return report


def capfilt_url_list(raw_json: str | Path) -> list[tuple[str, str]]:
    """``(id, url)`` pairs from the authors' released Web CapFilt list (``..._2273005_raw.json``).

    Rows carry ``url`` and ``jpg`` (the file name the authors gave the image, ``images/<8 digits>.jpg``, which
    their translated task-mix files refer to); the id is that file's stem. Rows without them are an error
    rather than a guess, since a wrong id silently pairs captions with the wrong images.
    """
    rows = json.loads(Path(raw_json).read_text(encoding="utf-8"))
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "url" not in row or "jpg" not in row:
            keys = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise ValueError(f"{raw_json} row {i}: expected keys 'url' and 'jpg' (the authors' download_images.py "
                             f"output), got {keys}. Build the (id, url) list yourself and call download_images.")
        out.append((Path(str(row["jpg"]).replace("\\", "/")).stem, row["url"]))
    return out
