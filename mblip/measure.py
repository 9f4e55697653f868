"""Run a stage's command and record what it cost: ``python -m mblip.measure <command...>``.

dvc.yaml runs every notebook stage through this (the ``nb`` variable): it starts the command, waits, and writes
``metrics/resources/<name>.json`` with the wall time, the CPU time and the peak resident memory of the command's
process tree (the largest single process, which for a papermill stage is the notebook's kernel), then exits with the
command's status. ``<name>`` is the stem of the executed notebook (``runs/09_evaluate_xgqa.ipynb`` ->
``09_evaluate_xgqa``) or ``--name``. The report turns these files into the per-stage runtime and memory table.

Linux/macOS only (``resource``); elsewhere the command runs and nothing is recorded.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path


def stage_name(argv: list[str]) -> str:
    """The executed notebook's stem: the last ``.ipynb`` argument (papermill's output path)."""
    notebooks = [a for a in argv if a.endswith(".ipynb")]
    if not notebooks:
        raise SystemExit("mblip.measure: no notebook in the command; pass --name NAME before the command")
    return Path(notebooks[-1]).stem


def peak_rss_mb(maxrss: int) -> float:
    """ru_maxrss in MiB: kilobytes on Linux, bytes on macOS."""
    return round(maxrss / (1024 * 1024 if platform.system() == "Darwin" else 1024), 1)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    name = None
    if argv[:1] == ["--name"]:
        name, argv = argv[1], argv[2:]
    if not argv:
        raise SystemExit("usage: python -m mblip.measure [--name NAME] command [args...]")
    name = name or stage_name(argv)
    t0 = time.perf_counter()
    code = subprocess.call(argv)
    wall = time.perf_counter() - t0
    try:
        import resource
    except ImportError:  # Windows
        return code
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = Path(os.environ.get("MBLIP_RESOURCES_DIR", "metrics/resources")) / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"stage": name, "wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
              "peak_rss_mb": peak_rss_mb(usage.ru_maxrss), "cpus": os.cpu_count(), "exit_code": code}
    out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main())
