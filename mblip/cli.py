"""`python -m mblip <command>` (also installed as `mblip`). Each pipeline step is a plain command here;
the stage notebooks call the same functions. Every command validates params.yaml before doing any work."""
from __future__ import annotations

import argparse
import json
import sys

from mblip import config as C


def _cfg(args) -> C.Config:
    return C.load(args.params)


def cmd_config(args) -> None:
    if args.check:
        cfg = _cfg(args)
        print(f"{args.params}: OK (preset {cfg.preset})")
        return
    if args.resolved:
        import yaml
        print(yaml.safe_dump(_cfg(args).to_dict(), sort_keys=False, allow_unicode=True))
        return
    width = max(len(k) for k, _, _ in C.describe())
    for key, default, text in C.describe():
        print(f"{key:<{width}}  {text}  [default {default}]")


def cmd_fetch(args) -> None:
    from mblip.fetch import fetch
    cfg = _cfg(args)
    report = fetch(cfg, force=args.force, only=args.only, link=args.link)
    print(json.dumps(report.get("stats") or report.get("counts"), indent=1, ensure_ascii=False)[:3000])
    print(f"fetch: {report['status']}")


def cmd_languages(args) -> None:
    from mblip import languages as L
    cfg = _cfg(args)
    share = L.shares(cfg.languages.use, cfg.languages.assignment, cfg.languages.temperature)
    n = args.n
    counts = L.counts(n, share)
    print(f"{'code':<5} {'nllb':<9} {'name':<22} {'share%':>8} {'examples of ' + str(n):>16}")
    for code, p in share.items():
        lang = L.get(code)
        print(f"{code:<5} {lang.nllb:<9} {lang.name:<22} {p:8.3f} {counts[code]:16d}")
    print(f"total assigned {sum(counts.values())} of {n} (dropped by flooring: {n - sum(counts.values())})")


def _stage(name):
    def run(args) -> None:
        from mblip import ablations, heldout, realign, report, stages
        cfg = _cfg(args)
        fn = {"standins": stages.standins, "translate": stages.translate, "taskmix": stages.taskmix,
              "features": realign.compute_features, "warmup": realign.warmup, "realign": realign.realign,
              "merge": realign.merge, "heldout": heldout.run, "report": report.build}[name] \
            if name not in ("evaluate", "ceiling", "finetune", "ablate", "ablate-init") else None
        if name == "evaluate":
            out = realign.evaluate(cfg, args.bench).metrics["average"]
        elif name == "ceiling":
            from mblip import ceiling
            result = ceiling.evaluate(cfg, args.bench)
            out = result.metrics["average"] if result else {"status": ceiling.NOT_APPLICABLE}
        elif name == "finetune":
            out = realign.finetune(cfg, args.task)["metrics"]["average"]
        elif name == "ablate":
            out = ablations.run_variant(cfg, args.variant)
        elif name == "ablate-init":
            out = ablations.init_ablation(cfg, seeds=args.seeds, steps=args.steps, limit=args.limit)["summary"]
        else:
            out = fn(cfg)
        if isinstance(out, dict):
            print(json.dumps({k: v for k, v in out.items() if isinstance(v, (int, float, str, dict, list))},
                             indent=1, default=str, ensure_ascii=False)[:4000])
    return run


STAGE_HELP = {
    "standins": "train the demo's pretrained stand-ins (or record the hub ids)",
    "translate": "translate what the task mix needs (cached, resumable) and measure quality",
    "taskmix": "build the instruction task mix",
    "features": "run the frozen ViT once per image and cache its outputs",
    "warmup": "projection-only warm-up",
    "realign": "re-align Q-Former + projection + LoRA on the task mix",
    "merge": "fold LoRA into the LLM and export a Blip2ForConditionalGeneration folder",
    "evaluate": "zero-shot evaluation of the realigned model on one benchmark",
    "heldout": "the realigned model on the validation mix: which of its own training tasks it learned",
    "ceiling": "demo: the LLM reading each scene's description instead of the image, on one benchmark",
    "finetune": "fine-tune the merged model on one task (English data), then evaluate every language",
    "report": "regenerate results/ (tables, figures)",
    "ablate": "one ablation variant: re-align with one change, score on the xGQA analogue",
    "ablate-init": "bootstrapped vs randomly initialised Q-Former over several seeds (learning curves)",
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="mblip", description=__doc__)
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml at the repo root)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("config", help="print every parameter with its docstring, or validate params.yaml")
    s.add_argument("--check", action="store_true", help="only validate params.yaml")
    s.add_argument("--resolved", action="store_true", help="print the merged config (preset + params.yaml)")
    s.set_defaults(func=cmd_config)

    s = sub.add_parser("fetch", help="fill data/: render the demo world or download the paper's files")
    s.add_argument("--force", action="store_true", help="demo: re-render even if data/ is up to date")
    s.add_argument("--only", nargs="+", help="paper: fetch only these sources, benchmarks or tags (e.g. xgqa xm3600)")
    s.add_argument("--link", choices=["hardlink", "symlink", "copy"], default="hardlink",
                   help="paper: how files from data.local are brought in")
    s.set_defaults(func=cmd_fetch)

    s = sub.add_parser("languages", help="the language table and the examples per language for N examples")
    s.add_argument("-n", type=int, default=100000)
    s.set_defaults(func=cmd_languages)

    for name, text in STAGE_HELP.items():
        s = sub.add_parser(name, help=text)
        if name in ("evaluate", "ceiling"):
            s.add_argument("bench")
        if name == "finetune":
            s.add_argument("task")
        if name == "ablate":
            from mblip.config import ABLATIONS
            s.add_argument("variant", choices=ABLATIONS)
        if name == "ablate-init":
            s.add_argument("--seeds", type=int, nargs="+", default=None, help="default: ablations.init_seeds")
            s.add_argument("--steps", type=int, default=None, help="default: ablations.steps")
            s.add_argument("--limit", type=int, default=None, help="questions per language at each budget "
                                                                   "(default: ablations.eval_limit)")
        s.set_defaults(func=_stage(name))

    from mblip.evaluate import add_score_parser
    add_score_parser(sub)

    args = p.parse_args(argv)
    try:
        args.func(args)
    except C.ConfigError as e:
        sys.exit(f"error: {e}")
