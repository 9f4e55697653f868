"""`mblip fetch`: fill `data/` (tracked by data.dvc) with the raw inputs of the pipeline.

* ``data.source: demo`` renders the demo world (`mblip.demo.build`) into ``data/demo/``. Rendering is
  deterministic, so fetching twice gives byte-identical files and a fresh clone's ``dvc status`` stays clean.
  A stamp (``data/demo/world.json``: the world's parameters + a hash of the code that renders it) makes a
  second fetch a no-op; a changed parameter or renderer rebuilds into a temporary folder that replaces the
  old one only when complete.
* ``data.source: paper`` downloads the public files of the protocol (`mblip.sources`) with checksums and
  resume, or links them from ``data.local``, and writes a coverage report of what could not be fetched.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from importlib import resources
from pathlib import Path

from mblip.config import Config, ConfigError


WORLD_MODULES = ("world.py", "realise.py", "annotate.py", "build.py")


def _code_hash() -> str:
    """Hash of the code that renders the demo world: a changed renderer or realiser means a different world.
    (Only these modules: the stand-in trainers beside them do not change data/.)"""
    h = hashlib.sha256()
    pkg = resources.files("mblip").joinpath("demo")
    for name in WORLD_MODULES:
        h.update(name.encode())
        h.update(pkg.joinpath(name).read_bytes())
    return h.hexdigest()[:16]


def world_spec(cfg: Config) -> dict:
    w = cfg.world
    return {"n_train": w.n_train, "n_val": w.n_val, "n_test": w.n_test, "image_size": w.image_size,
            "max_objects": w.max_objects, "seed": cfg.seed, "languages": list(cfg.languages.use or []),
            "code": _code_hash()}


def check_demo_languages(cfg: Config) -> list[str]:
    from mblip.demo.realise import LANGUAGES as WORLD_LANGS
    langs = cfg.languages.use
    if not langs:
        raise ConfigError("languages.use must list the demo languages in the demo preset "
                          f"(the demo world realises {', '.join(WORLD_LANGS)})")
    bad = [c for c in langs if c not in WORLD_LANGS]
    if bad:
        raise ConfigError(f"languages.use: the demo world has no realiser for {bad}; it speaks "
                          f"{', '.join(WORLD_LANGS)} (add a realiser in mblip/demo/realise.py)")
    if "en" not in langs:
        raise ConfigError("languages.use must include 'en': the task mix is built in English and translated")
    return list(langs)


def fetch_demo(cfg: Config, root: Path, force: bool = False) -> dict:
    from mblip.demo.build import build_world
    langs = check_demo_languages(cfg)
    out = root / cfg.data.root / "demo"
    stamp = out / "world.json"
    spec = world_spec(cfg)
    if not force and stamp.exists() and json.loads(stamp.read_text())["spec"] == spec:
        report = json.loads(stamp.read_text())
        report["status"] = "up to date"
        return report
    tmp = out.with_name("demo.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.time()
    stats = build_world(tmp, n_train=cfg.world.n_train, n_val=cfg.world.n_val, n_test=cfg.world.n_test,
                        image_size=cfg.world.image_size, max_objects=cfg.world.max_objects,
                        seed=cfg.seed, languages=langs)
    # No timestamps in the stamp: it is part of data/ and must hash the same on every machine.
    report = {"spec": spec, "stats": stats}
    (tmp / "world.json").write_text(json.dumps(report, indent=1, sort_keys=True, ensure_ascii=False) + "\n",
                                    encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return {**report, "status": f"rendered in {time.time() - t0:.1f}s"}


def fetch_paper(cfg: Config, root: Path, only: list[str] | None = None, link: str = "hardlink") -> dict:
    """Download (or link from ``data.local``) the protocol's public files; COVERAGE.md lists what is missing."""
    from mblip import download, sources
    dest = root / cfg.data.root / "paper"
    report = download.fetch_all(sources.paper_sources(), dest, local=cfg.data.local, only=only, link=link)
    d = report.to_dict()
    d["status"] = "complete" if report.complete else f"incomplete: {len(report.missing)} missing, see {dest}/COVERAGE.md"
    return d


def fetch(cfg: Config, force: bool = False, only: list[str] | None = None, link: str = "hardlink") -> dict:
    root = cfg.repo_root
    if cfg.data.source == "demo":
        return fetch_demo(cfg, root, force=force)
    return fetch_paper(cfg, root, only=only, link=link)
