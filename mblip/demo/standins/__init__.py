"""Pretrained stand-ins for the demo preset, trained from the demo world and saved with `save_pretrained`.

The paper starts from checkpoints it downloads: EVA-CLIP inside BLIP-2, Flan-T5 (BLIP-2's English LLM), mT0 /
BLOOMZ (the multilingual LLMs) and NLLB (the translator). The demo trains tiny versions of each here, in the order
the real ones came to be, and writes them as ordinary Hugging Face folders that the rest of the pipeline loads with
`from_pretrained(path)` exactly like hub ids:

    <out_dir>/
      vit/        "EVA-CLIP": Blip2VisionModel (64 px, patch 8) + BlipImageProcessor; pretrained on its own with
                  per-column attribute heads (shape-or-empty, colour, size), which are not saved
      flan-t5/    "Flan-T5": English-only T5ForConditionalGeneration + English Unigram tokenizer, instruction-tuned
                  on text: scene description + instruction -> English caption / answer
      blip2-en/   English "BLIP-2": Blip2ForConditionalGeneration = vit/ (frozen) + a new Q-Former and projection
                  aligned to the frozen flan-t5/; tokenizer with <image>; Blip2Processor (image processor at 64 px)
      mt0/        "mT0": MT5ForConditionalGeneration + multilingual Unigram tokenizer; captions and answers in all
                  demo languages from the *textual* scene description (prompts name the output language)
      bloomz/     "BLOOMZ": BloomForCausalLM + byte-level BPE tokenizer, the same tasks as mt0/ (causal path)
      nllb/       "NLLB": M2M100ForConditionalGeneration + NllbTokenizer with NLLB language codes (src_lang,
                  forced target-language token), trained briefly on realiser parallel text, so it makes errors
      metrics.json  held-out metrics and wall time of every stand-in (`train_all`)

The *scene description* (`scene_text`) is what a text-only LM sees in place of an image: a fixed English format,
`scene: left large red circle | right small blue square`. Re-alignment later teaches the Q-Former to stand in for it.

Everything is seeded (`torch.manual_seed`, `random.Random`) and draws batches in a fixed order, so a rerun with the
same arguments gives the same weights on the same machine.

The package holds one idea a module (the orchestration is here):

    text.py     the scene description (`scene_text`), the task samplers (`WorldText`, `TaskSampler`) and the
                tokenizers trained on the world's text (`t5_tokenizer`, `bloom_tokenizer`, `nllb_tokenizer`)
    common.py   what every trainer shares: the learning rates (`LR`), the training loop (`_fit`), `example_loss`,
                padding, the text LMs' batches (`Seq2SeqBatcher`), greedy generation and held-out metrics
    priors.py   the LMs' initialisation priors: local heads, match heads, aligned words (`word_anchors`)
    vision.py   the ViT ("EVA-CLIP", `train_vision` with `AttributeProbe`) and the English BLIP-2
                (`train_blip2_english`, `text_target_loss`)
    lms.py      the text LMs: `train_english_lm`, `train_mt0`, `train_bloomz`, `train_nllb`
    __init__.py `train_all`: every stand-in, in `FOLDERS` order, the two `CHAINS` in one process or two
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mblip.demo.realise import LANGUAGES, N_CAPTION_VARIANTS
from mblip.demo.standins.common import LR, Seq2SeqBatcher, example_loss
from mblip.demo.standins.lms import parallel_text, train_bloomz, train_english_lm, train_mt0, train_nllb
from mblip.demo.standins.priors import (LOCAL_BIAS, LOCAL_OFFSETS, MATCH_HEADS, T5_HEADS, WORD_ALIGN, WORD_ATTRIBUTES,
                                        word_anchors)
from mblip.demo.standins.text import (BLOOM_SPECIALS, IMAGE_TOKEN, NLLB_SPECIALS, T5_SPECIALS, TaskSampler, WorldText,
                                      _t5_from_unigram, _unigram, bloom_tokenizer, caption_prompts, caption_variant,
                                      nllb_tokenizer, scene_prefix, scene_text, t5_tokenizer, vqa_prompts, world_texts)
from mblip.demo.standins.vision import (N_ATTR, AttributeProbe, attribute_accuracy, attribute_labels, image_processor,
                                        pixels, text_target_loss, train_blip2_english, train_vision, vision_features)
from mblip.demo.world import make_scenes

__all__ = [
    # orchestration (here)
    "CHAINS", "FOLDERS", "LR", "train_all",
    # text: scene description, task samplers, tokenizers
    "BLOOM_SPECIALS", "IMAGE_TOKEN", "NLLB_SPECIALS", "T5_SPECIALS", "TaskSampler", "WorldText", "bloom_tokenizer",
    "caption_prompts", "caption_variant", "nllb_tokenizer", "scene_prefix", "scene_text", "t5_tokenizer",
    "vqa_prompts", "world_texts",
    # common: shared training helpers
    "Seq2SeqBatcher", "example_loss",
    # priors: the LMs' initialisation priors
    "LOCAL_BIAS", "LOCAL_OFFSETS", "MATCH_HEADS", "T5_HEADS", "WORD_ALIGN", "WORD_ATTRIBUTES", "word_anchors",
    # vision: the ViT and the English BLIP-2
    "N_ATTR", "AttributeProbe", "attribute_accuracy", "attribute_labels", "image_processor", "pixels",
    "text_target_loss", "train_blip2_english", "train_vision", "vision_features",
    # lms: the text LMs
    "parallel_text", "train_bloomz", "train_english_lm", "train_mt0", "train_nllb",
]


FOLDERS = {"vit": "vit", "flan_t5": "flan-t5", "blip2": "blip2-en", "mt0": "mt0", "bloomz": "bloomz", "nllb": "nllb"}
# Stand-ins that depend on each other (blip2 reads vit and flan_t5); the two chains are independent. NLLB depends on
# neither (every chain realises the world text it reads): it sits where it evens out the two chains' demo times.
CHAINS = (("vit", "flan_t5", "blip2", "nllb"), ("mt0", "bloomz"))
# The learning rates `LR` live in common.py, where the trainers' defaults read them (imported above).


# ----------------------------------------------------------------------------------------------------------------
# train_all: every stand-in, in training order


def train_all(out_dir: str | Path, *, n_train: int = 4000, n_val: int = 300, image_size: int = 64,
              max_objects: int = 3, langs: Sequence[str] = LANGUAGES, seed: int = 42, vit_steps: int = 900,
              lm_steps: int = 2000, blip2_steps: int = 3000, mt0_steps: int = 3000, bloomz_steps: int = 300,
              nllb_steps: int = 900, batch_size: int = 64, vit_hidden: int = 64, d_model: int = 64,
              en_vocab: int = 800, multi_vocab: int = 2500, tokenizer_corpus: int = 6000, n_eval: int = 30,
              n_text: int | None = None, nllb_d_model: int = 128, lr_scale: float = 1.0,
              nli_share: float = 0.0, pair_share: float = 0.0, match_heads: bool = False, aligned_words: bool = False,
              blip2_query_tokens: int = 8, blip2_text_target: float = 0.0,
              only: Sequence[str] | None = None, workers: int = 1) -> dict:
    """Train every stand-in into `out_dir` (layout in the module docstring) and write `metrics.json`.

    out_dir: e.g. models/standins; each stand-in's folder is replaced.
    n_train, n_val, image_size, max_objects, seed: the demo world (params `world.*`, `seed`): the same scenes and
        images as `mblip fetch` renders; seed also seeds every initialisation and batch order.
    langs: demo languages, English first (params `languages.use`).
    *_steps: optimisation steps per stand-in; batch_size: examples per step for all of them.
    vit_hidden, d_model: widths of the ViT and of every LM that takes visual tokens (equal widths allow
        projection="reuse"); nllb_d_model: width of the translator (it needs more than the LMs to translate well).
    en_vocab, multi_vocab: tokenizer vocabulary bounds; tokenizer_corpus: unique sentences the multilingual
        tokenizers are trained on (training time grows with it).
    n_eval: held-out scenes per metric.
    n_text: train-split scenes whose *text* the LMs (flan_t5, mt0, bloomz) learn from; None = 3 x n_train. They are
        text-only (no images), the first n_train of them are the image scenes, and all belong to the train split, so
        the held-out scenes stay unseen. Pretrained LMs read far more text than the images a Q-Former is aligned on;
        on the 4,000 image scenes alone the tiny LMs memorise scenes instead of learning to read them.
    lr_scale: multiplies every learning rate in `LR` (tiny test models take larger steps).
    nli_share, pair_share: shares of XVNLI- and MaRVL-style statements in the multilingual LMs' instruction data
        (`TaskSampler`); 0 leaves them out. match_heads: the English LM starts with `_match_heads`.
    aligned_words: the "mT0" starts with aligned attribute words and match heads (`train_mt0`).
    blip2_query_tokens, blip2_text_target: the English BLIP-2's number of queries and the weight of its
        scene-description target (`train_blip2_english`'s num_query_tokens and text_target).
    only: names from FOLDERS to train (the others must already be in out_dir when needed: blip2 reads vit and
        flan_t5); None = all.
    workers: processes to train in. The stand-ins form two independent chains (`CHAINS`: the English vision side
        with the translator, and the multilingual LMs); with workers >= 2 each chain trains in its own process.
        Every stand-in trains on one torch thread either way, so the weights do not depend on `workers`.
    Returns the metrics (also in out_dir/metrics.json) with the wall time of every stand-in.
    """
    if not langs or langs[0] != "en":
        raise ValueError(f"langs must start with 'en' (the English stand-ins and the translator's source), got {langs}")
    unknown = sorted(set(only or ()) - set(FOLDERS))
    if unknown:
        raise ValueError(f"only= names unknown stand-ins {unknown}; choose from {list(FOLDERS)}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if blip2_query_tokens < 1 or blip2_text_target < 0:
        raise ValueError(f"blip2_query_tokens must be >= 1 and blip2_text_target >= 0, got {blip2_query_tokens} and "
                         f"{blip2_text_target}")
    todo = list(FOLDERS) if only is None else [n for n in FOLDERS if n in only]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    chain_args = inspect.signature(_train_chain).parameters
    settings = {k: v for k, v in locals().items() if k in chain_args and k not in ("out_dir", "todo")}
    groups = [[n for n in chain if n in todo] for chain in CHAINS]
    groups = [g for g in groups if g]
    if workers > 1 and len(groups) > 1:
        from mblip.stages import process_pool
        with process_pool(len(groups)) as pool:
            parts = [f.result() for f in [pool.submit(_train_chain, out_dir, g, **settings) for g in groups]]
    else:
        parts = [_train_chain(out_dir, todo, **settings)]
    metrics: dict = {}
    for part in parts:
        metrics.update(part)
    metrics["world"] = parts[0]["world"]  # each process builds the world; the first one's time is recorded
    metrics["seconds_total"] = round(time.perf_counter() - start, 1)
    metrics["threads"] = 1
    metrics["workers"] = len(parts)
    old = json.loads((out_dir / "metrics.json").read_text()) if (out_dir / "metrics.json").exists() else {}
    (out_dir / "metrics.json").write_text(json.dumps({**old, **metrics}, indent=1, ensure_ascii=False) + "\n")
    tqdm.write(f"stand-ins done in {metrics['seconds_total']:.0f} s ({len(parts)} process(es)) -> {out_dir}")
    return metrics


def _train_chain(out_dir: Path, todo: Sequence[str], *, n_train: int, n_val: int, image_size: int,
                 max_objects: int, langs: Sequence[str], seed: int, vit_steps: int, lm_steps: int, blip2_steps: int,
                 mt0_steps: int, bloomz_steps: int, nllb_steps: int, batch_size: int, vit_hidden: int, d_model: int,
                 en_vocab: int, multi_vocab: int, tokenizer_corpus: int, n_eval: int, n_text: int | None,
                 nllb_d_model: int, lr_scale: float, nli_share: float, pair_share: float, match_heads: bool,
                 aligned_words: bool, blip2_query_tokens: int, blip2_text_target: float) -> dict:
    """Train the stand-ins `todo` (in FOLDERS order; arguments as `train_all`) on one torch thread; their metrics
    with the wall time of each."""
    torch.set_num_threads(1)  # one thread per chain: the weights do not depend on how many chains run at once
    path = {name: out_dir / folder for name, folder in FOLDERS.items()}
    metrics: dict = {}
    bar = tqdm(total=len(todo) + 1, desc=f"stand-ins {'+'.join(todo)}", unit="model")

    def done(name: str, t0: float, m: dict, line: str) -> None:
        metrics[name] = {**m, "seconds": round(time.perf_counter() - t0, 1)}
        tqdm.write(f"{name:8s} {metrics[name]['seconds']:6.1f} s  {line}")
        bar.update()

    t0 = time.perf_counter()
    n_text = max(n_train, 3 * n_train if n_text is None else n_text)
    text_scenes = make_scenes(n_text, "train", seed, max_objects)  # the image scenes are its first n_train
    train_scenes = text_scenes[:n_train]
    val_scenes = make_scenes(n_val, "val", seed, max_objects)
    need_pixels = {"vit", "blip2"} & set(todo)
    train_x = pixels(train_scenes, image_size, seed) if need_pixels else None
    val_x = pixels(val_scenes, image_size, seed) if need_pixels else None
    texts = WorldText(train_scenes, seed, langs)
    statements = bool(nli_share or pair_share) and bool({"mt0", "bloomz"} & set(todo))
    lm_texts = WorldText(text_scenes, seed, langs, statements) if {"flan_t5", "mt0", "bloomz"} & set(todo) else None
    done("world", t0, {"train_scenes": n_train, "val_scenes": n_val, "text_scenes": n_text},
         f"{n_train} train / {n_val} held-out scenes, {N_CAPTION_VARIANTS * len(texts.captions)} captions and "
         f"{len(texts.questions)} questions in {len(langs)} languages; {n_text} text-only train scenes for the LMs")

    if "vit" in todo:
        t0 = time.perf_counter()
        grid = image_size // 8
        m = train_vision(path["vit"], train_x, attribute_labels(train_scenes, grid), val_x,
                         attribute_labels(val_scenes, grid)[0], hidden_size=vit_hidden, steps=vit_steps,
                         batch_size=batch_size, lr=LR["vit"] * lr_scale, seed=seed)
        done("vit", t0, m, f"held-out accuracy shape {m['shape']:.3f} colour {m['colour']:.3f} size {m['size']:.3f}")
    if "flan_t5" in todo:
        t0 = time.perf_counter()
        m = train_english_lm(path["flan_t5"], lm_texts, val_scenes, d_model=d_model, vocab_size=en_vocab,
                             steps=lm_steps, batch_size=batch_size, lr=LR["flan_t5"] * lr_scale, n_eval=n_eval,
                             seed=seed, match_heads=match_heads)
        done("flan_t5", t0, m, f"text-only VQA EM {m['vqa_em']:.3f}, caption acc {m['caption_acc']:.3f}")
    if "blip2" in todo:
        t0 = time.perf_counter()
        m = train_blip2_english(path["blip2"], path["vit"], path["flan_t5"], texts, val_scenes, train_x, val_x,
                                steps=blip2_steps, batch_size=batch_size, lr=LR["blip2"] * lr_scale, n_eval=n_eval,
                                num_query_tokens=blip2_query_tokens, text_target=blip2_text_target, seed=seed)
        done("blip2", t0, m, f"image VQA EM {m['vqa_em']:.3f}, caption acc {m['caption_acc']:.3f}")
    multi = [n for n in ("mt0", "bloomz", "nllb") if n in todo]
    if multi:
        t0 = time.perf_counter()
        corpus = world_texts(texts, langs, limit=tokenizer_corpus)
        unigram = _unigram(corpus, multi_vocab, T5_SPECIALS) if "mt0" in multi else None
        tokenizer_seconds = time.perf_counter() - t0
    if "mt0" in todo:
        t0 = time.perf_counter()
        m = train_mt0(path["mt0"], lm_texts, val_scenes, _t5_from_unigram(unigram), langs=langs, d_model=d_model,
                      steps=mt0_steps, batch_size=batch_size, lr=LR["mt0"] * lr_scale, n_eval=n_eval, seed=seed,
                      nli_share=nli_share, pair_share=pair_share, aligned_words=aligned_words)
        done("mt0", t0, m, _per_lang_line(m))
    if "bloomz" in todo:
        t0 = time.perf_counter()
        m = train_bloomz(path["bloomz"], lm_texts, val_scenes, bloom_tokenizer(corpus, multi_vocab), langs=langs,
                         hidden_size=d_model, steps=bloomz_steps, batch_size=batch_size, lr=LR["bloomz"] * lr_scale,
                         n_eval=n_eval, seed=seed, nli_share=nli_share, pair_share=pair_share)
        done("bloomz", t0, m, _per_lang_line(m))
    if "nllb" in todo:
        t0 = time.perf_counter()
        m = train_nllb(path["nllb"], texts, val_scenes, corpus, langs=langs, d_model=nllb_d_model, steps=nllb_steps,
                       vocab_size=multi_vocab,
                       batch_size=batch_size, lr=LR["nllb"] * lr_scale, n_eval=n_eval, seed=seed)
        done("nllb", t0, m, "sentence acc " + " ".join(f"{c} {v:.2f}" for c, v in m["sentence_acc"].items())
             + "; questions " + " ".join(f"{c} {v:.2f}" for c, v in m["question_acc"].items()))
    bar.close()
    if multi:
        metrics["tokenizers"] = {"seconds": round(tokenizer_seconds, 1), "corpus": len(corpus)}
    return metrics

def _per_lang_line(m: dict) -> str:
    qa = " ".join(f"{c} {v:.2f}" for c, v in m["qa_em"].items())
    line = f"text-only QA EM {qa}; caption acc (mean) {np.mean(list(m['caption_acc'].values())):.2f}"
    for key, name in (("nli_acc", "NLI"), ("pair_acc", "pair statements")):
        if key in m:
            line += f"; {name} acc (mean) {np.mean(list(m[key].values())):.2f}"
    return line
