"""The text-only ceiling of the demo: the experiment's own LLM reads the scene description instead of the image.

The demo world knows what every image shows, so the LLM that re-alignment grafts onto (``models.llm``, the stand-in
"mT0" by default) can be asked the benchmark's questions with the scene description (`scene_text`, what it was
instruction-tuned to read) in place of the visual tokens. `evaluate` runs it through the same evaluator as the
re-aligned model: the same files, prompts, decoding and metric. The difference between the two is what the
visual side (ViT + Q-Former + projection + LoRA) fails to carry over from the image; the ceiling does not move
when re-alignment changes. Only the demo world has descriptions; with paper data the stage records
"not applicable".

    cfg = config.load("params.yaml")
    ceiling.evaluate(cfg, "xgqa")      # metrics/eval/ceiling/xgqa.json, plots/eval/ceiling/xgqa.csv

The input is built exactly as the stand-in LMs were trained (`mblip.demo.standins.lms`): seq2seq = description ids
(two descriptions one after the other for the two images of MaRVL) + instruction ids + ``</s>``; causal = description
ids + ids of " " + instruction, left-padded.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from mblip.config import Config
from mblip.stages import _root, cpu_threads, data_dir, model_path, write_json, write_rows

TAG = "ceiling"
NOT_APPLICABLE = "not applicable: only the demo world has scene descriptions to read instead of the images"


def scene_descriptions(data: str | Path) -> dict[str, str]:
    """{scene id (= image file stem): description} for every scene of a rendered demo world (``scenes.jsonl``)."""
    from mblip.demo.standins.text import scene_text
    from mblip.demo.world import Scene

    path = Path(data) / "scenes.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `mblip fetch` to render the demo world")
    out = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                scene = Scene.from_dict(json.loads(line))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{i}: not a scene record ({e}); re-render it: `mblip fetch --force`") from None
            out[scene.id] = scene_text(scene)
    return out


def text_generate(model, tok, descriptions: Mapping[str, str], batch_size: int = 64):
    """An evaluator `generate(images, prompts, decoding)` that gives `model` each image's description instead."""
    from mblip.demo.standins.common import _pad
    causal = not model.config.is_encoder_decoder
    pad = tok.pad_token_id
    cache: dict[str, list[int]] = {}

    def description_ids(image: Path) -> list[int]:
        key = Path(image).stem
        if key not in cache:
            if key not in descriptions:
                raise KeyError(f"{image}: no scene description for {key!r} in the demo world's scenes.jsonl")
            cache[key] = tok(descriptions[key], add_special_tokens=False)["input_ids"]
        return cache[key]

    def generate(images: list[list[Path]], prompts: list[str], decoding) -> list[str]:
        out: list[str] = []
        model.eval()
        for start in range(0, len(prompts), batch_size):
            ims, prs = images[start:start + batch_size], prompts[start:start + batch_size]
            if causal:
                instr = tok([" " + p for p in prs], add_special_tokens=False)["input_ids"]
            else:
                instr = tok(list(prs))["input_ids"]
            seqs = [[t for im in im_list for t in description_ids(im)] + ids for im_list, ids in zip(ims, instr)]
            input_ids = _pad(seqs, pad, left=causal)  # a causal LM continues the prompt: left padding
            mask = _pad([[1] * len(s) for s in seqs], 0, left=causal)
            with torch.no_grad():
                ids = model.generate(input_ids=input_ids, attention_mask=mask, pad_token_id=pad,
                                     **decoding.generate_kwargs())
            if causal:
                ids = ids[:, input_ids.shape[1]:]  # a causal LM returns the prompt before the new tokens
            out += [o.strip() for o in tok.batch_decode(ids, skip_special_tokens=True)]
        return out

    return generate


def load_llm(cfg: Config):
    """(model, tokenizer) of ``models.llm`` as a text-only LM (seq2seq or causal, from its config)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    path = model_path(cfg, cfg.models.llm)
    auto = AutoModelForSeq2SeqLM if AutoConfig.from_pretrained(path).is_encoder_decoder else AutoModelForCausalLM
    return auto.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def evaluate(cfg: Config, bench: str):
    """The text-only ceiling on one benchmark, recorded as model ``ceiling`` (`mblip.realign.run_eval`); with paper
    data, a metrics file that says it is not applicable. Returns the `EvalResult`, or None when not applicable."""
    from mblip.realign import run_eval

    root = _root(cfg)
    if cfg.data.source != "demo":
        (root / "artifacts/eval" / TAG / bench).mkdir(parents=True, exist_ok=True)
        write_json(root / "metrics/eval" / TAG / f"{bench}.json", {"status": NOT_APPLICABLE})
        write_rows(root / "plots/eval" / TAG / f"{bench}.csv", [], fieldnames=["bench", "lang", "metric", "value",
                                                                               "model"])
        return None
    cpu_threads()
    model, tok = load_llm(cfg)
    gen = text_generate(model, tok, scene_descriptions(data_dir(cfg)), batch_size=cfg.eval.batch_size)
    return run_eval(cfg, bench, gen, TAG)

