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
"""

from __future__ import annotations

import difflib
import inspect
import itertools
import json
import math
import random
import string
import time
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mblip import languages as language_table
from mblip import templates
from mblip.demo import annotate
from mblip.demo.realise import (DETS, LANGUAGES, N_CAPTION_VARIANTS, NP, Caption, QColour, QCount, QExist, QShape, QSize,
                                 QWhere, realise, sample_meanings)
from mblip.demo.world import COLOURS, POSITIONS, SHAPES, SIZES, Obj, Scene, make_scenes, object_centre, render

IMAGE_TOKEN = "<image>"
# Special tokens, in the id order of the real models' vocabularies.
T5_SPECIALS = ("<pad>", "</s>", "<unk>", IMAGE_TOKEN)  # T5 / mT5: pad 0, eos 1 (= decoder start 0)
BLOOM_SPECIALS = ("<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN)  # BLOOM: unk 0, bos 1, eos 2, pad 3
NLLB_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # NLLB: bos 0, pad 1, eos 2 (= decoder start), unk 3
FOLDERS = {"vit": "vit", "flan_t5": "flan-t5", "blip2": "blip2-en", "mt0": "mt0", "bloomz": "bloomz", "nllb": "nllb"}
# Stand-ins that depend on each other (blip2 reads vit and flan_t5); the two chains are independent. NLLB depends on
# neither (every chain realises the world text it reads): it sits where it evens out the two chains' demo times.
CHAINS = (("vit", "flan_t5", "blip2", "nllb"), ("mt0", "bloomz"))
# Learning rates: the T5 family trains unstably above ~1e-3 with AdamW (no 1/sqrt(d) in its attention).
LR = {"vit": 2e-3, "flan_t5": 1e-3, "blip2": 2e-3, "mt0": 1e-3, "bloomz": 2e-3, "nllb": 2e-3}
N_ATTR = {"shape": len(SHAPES) + 1, "colour": len(COLOURS), "size": len(SIZES)}  # shape class 0 = empty column


# ----------------------------------------------------------------------------------------------------------------
# the textual scene description


def scene_text(scene: Scene) -> str:
    """What a text-only LM sees instead of the image: `scene: left large red circle | right small blue square`.

    Separators stand apart from the words, so every attribute is the same token wherever it sits in the list.
    """
    return "scene: " + " | ".join(f"{o.position} {o.size} {o.colour} {o.shape}" for o in scene.objects)


def _name(code: str) -> str:
    return language_table.get(code).name


# ----------------------------------------------------------------------------------------------------------------
# task examples: (scene index, instruction, target), drawn one at a time from a seeded RNG


def _captions(scenes: Sequence[Scene], seed: int, langs: Sequence[str]) -> list[tuple[int, list[dict]]]:
    """(scene index, [{lang: caption} per caption variant]) for every scene."""
    recs = annotate.captions(scenes, seed, [c for c in langs if c != "en"])
    texts = [{"en": r["en"]["caption"], **{c: t["caption"] for c, t in r["gold"].items()}} for r in recs]
    return [(i, texts[i * N_CAPTION_VARIANTS:(i + 1) * N_CAPTION_VARIANTS]) for i in range(len(scenes))]


def _questions(scenes: Sequence[Scene], seed: int, langs: Sequence[str], make=annotate.vqa) -> list[tuple[int, dict]]:
    """(scene index, {lang: (question, answer)}) for the VQA (or GQA) questions of every scene."""
    index = {annotate.image_path(s.id): i for i, s in enumerate(scenes)}
    recs = make(scenes, seed, [c for c in langs if c != "en"])
    return [(index[r["image"]], {"en": (r["en"]["question"], r["en"]["answer"]),
                                 **{c: (t["question"], t["answer"]) for c, t in r["gold"].items()}})
            for r in recs]


def caption_prompts(code: str) -> list[str]:
    """Caption instructions for language `code`: the protocol's templates + the XM3600 eval prompt."""
    out = [t.format(_name(code)) for t in templates.CAPTION_TEMPLATES_LANG]
    if code == "en":
        out += list(templates.CAPTION_TEMPLATES_EN)
    return out + ["Caption in {}: ".format(_name(code))]  # == templates.eval_prompt("xm3600", code)


def caption_variant(k: int, n_prompts: int) -> int:
    """Which caption variant (plain / with sizes / positional) the k-th of n caption prompts asks for.

    Each prompt always gets the same variant, so a prompt has one answer and greedy decoding does not blend
    variants; the eval prompt (the last) gets the plain caption.
    """
    return 0 if k == n_prompts - 1 else k % N_CAPTION_VARIANTS


def vqa_prompts(question: str, answer_code: str) -> list[str]:
    """VQA instructions asking for an answer in `answer_code`: the protocol's templates + the xGQA/MaXM prompt."""
    name = _name(answer_code)
    eval_prompt = f"Question: {question} Short answer in {name}:"  # the xGQA (English) / MaXM eval prompt
    return [t.format(question, name) for t in templates.VQA_TEMPLATES] + [eval_prompt]


def _hypotheses(scenes: Sequence[Scene], seed: int, langs: Sequence[str]) -> list[tuple[int, dict, str]]:
    """(scene index, {lang: hypothesis}, yes / no / maybe) for the XVNLI-style hypotheses of every scene."""
    index = {annotate.image_path(s.id): i for i, s in enumerate(scenes)}
    return [(index[r["image"]], {"en": r["en"]["hypothesis"], **{c: t["hypothesis"] for c, t in r["gold"].items()}},
             templates.XVNLI_LABELS[r["label"]]) for r in annotate.nli(scenes, seed, [c for c in langs if c != "en"])]


def _statements(scenes: Sequence[Scene], seed: int, langs: Sequence[str]) -> list[tuple[tuple[int, int], dict, str]]:
    """((left, right) scene indices, {lang: statement}, yes / no) for MaRVL-style statements over scene pairs."""
    index = {s.id: i for i, s in enumerate(scenes)}
    return [((index[r["left"]], index[r["right"]]),
             {"en": r["en"]["statement"], **{c: t["statement"] for c, t in r["gold"].items()}},
             "yes" if r["label"] else "no") for r in annotate.two_image(scenes, seed, [c for c in langs if c != "en"])]


class WorldText:
    """The train scenes' captions and VQA questions, realised once in every language the stand-ins need.

    statements: also realise an XVNLI-style hypothesis per NLI label per scene (`hypotheses`) and a MaRVL-style
    statement per scene pair (`pairs`), the instruction data of the multilingual LMs (see `TaskSampler`).
    """

    def __init__(self, scenes: Sequence[Scene], seed: int, langs: Sequence[str], statements: bool = False):
        self.scenes, self.seed, self.langs = list(scenes), seed, list(langs)
        self.captions = _captions(scenes, seed, self.langs)
        self.questions = _questions(scenes, seed, self.langs)
        self.hypotheses = _hypotheses(scenes, seed, self.langs) if statements else []
        self.pairs = _statements(scenes, seed, self.langs) if statements and len(scenes) > 1 else []


class TaskSampler:
    """Draws (scene, instruction, target) training examples in the given languages; scene is a scene index, or a
    (left, right) pair of them for a two-scene statement.

    A caption example picks a scene, a language and a template (which fixes the caption variant,
    `caption_variant`); a VQA example picks a question and its language and answers in English or in that
    language (half each, as the authors' VQA answer rule), the template naming the answer language. The eval
    prompts ("Caption in X: ", "Question: q Short answer in X:") are drawn a third of the time, so the zero-shot
    prompts are well known. `vqa_share` of the examples are VQA.

    `nli_share` of the examples are an XVNLI-style hypothesis about the scene in one of the languages, answered
    yes / no / maybe in English, and `pair_share` of the batches (`batch`) MaRVL-style statements about two scenes,
    answered yes / no (whole batches: a two-scene input is twice as long, and one in a batch would pad all the
    others to its length); both with the evaluation prompts (`templates.eval_prompt`). They stand for the
    sentence-pair and classification tasks the real mT0 and BLOOMZ were instruction-tuned on in 46 languages (xP3
    holds XNLI with this prompt), the ground that zero-shot XVNLI and MaRVL stand on; the world text must have been
    realised with `statements=True`.
    """

    def __init__(self, texts: "WorldText", langs: Sequence[str], vqa_share: float = 0.7, nli_share: float = 0.0,
                 pair_share: float = 0.0):
        self.vqa_share = vqa_share  # answers need reasoning over the scene, captions mostly copy it: more VQA
        missing = [c for c in langs if c not in texts.langs]
        if missing:
            raise ValueError(f"the world text was realised in {texts.langs}, not in {missing}; add them to its langs")
        if (nli_share and not texts.hypotheses) or (pair_share and not texts.pairs):
            raise ValueError("nli_share / pair_share need statements: build the WorldText with statements=True")
        if nli_share + pair_share >= 1:
            raise ValueError(f"nli_share + pair_share must leave room for captions and VQA, "
                             f"got {nli_share + pair_share}")
        self.langs = list(langs)
        self.nli_share, self.pair_share = nli_share, pair_share
        self.captions, self.questions = texts.captions, texts.questions
        self.hypotheses, self.pairs = texts.hypotheses, texts.pairs

    def batch(self, rng: random.Random, n: int) -> list[tuple[int | tuple[int, int], str, str]]:
        """n examples: two-scene statements (`pair_share` of the batches) or single-scene examples (`__call__`)."""
        if self.pair_share and rng.random() < self.pair_share:  # no extra draw when off: old runs keep their order
            out = []
            for _ in range(n):
                code = rng.choice(self.langs)
                scenes, statement, label = rng.choice(self.pairs)
                out.append((scenes, templates.eval_prompt("marvl", statement[code]), label))
            return out
        return [self(rng) for _ in range(n)]

    def __call__(self, rng: random.Random) -> tuple[int, str, str]:
        """One single-scene example: a hypothesis (`nli_share`), else a caption or a question."""
        code = rng.choice(self.langs)
        if self.nli_share and rng.random() < self.nli_share:  # no extra draw when off: old runs keep their order
            scene, hypothesis, label = rng.choice(self.hypotheses)
            return scene, templates.eval_prompt("xvnli", hypothesis[code]), label
        eval_prompt = rng.random() < 1 / 3
        if rng.random() >= self.vqa_share:
            scene, variants = rng.choice(self.captions)
            prompts = caption_prompts(code)
            k = len(prompts) - 1 if eval_prompt else rng.randrange(len(prompts) - 1)
            return scene, prompts[k], variants[caption_variant(k, len(prompts))][code]
        scene, texts = rng.choice(self.questions)
        question, answer = texts[code]
        answer_code = code if rng.random() < 0.5 else "en"
        prompts = vqa_prompts(question, answer_code)
        return scene, prompts[-1] if eval_prompt else rng.choice(prompts[:-1]), texts[answer_code][1]


def scene_prefix(scene_ids: Sequence[list[int]], scene: int | tuple[int, ...]) -> list[int]:
    """The text LM's input before the instruction: one scene description, or two one after the other."""
    return list(scene_ids[scene]) if isinstance(scene, int) else [t for i in scene for t in scene_ids[i]]


def _norm(text: str) -> str:
    return " ".join(text.strip().split()).casefold()


# ----------------------------------------------------------------------------------------------------------------
# tokenizers, trained with `tokenizers` on the world's own text


_MARK = "\x01"  # never in the world's text
_STEP = 1.5e-4  # a little over the 1e-4 between the made-up scores of characters the Unigram trainer left unpicked


def _unigram(texts: Sequence[str], vocab_size: int, specials: Sequence[str]):
    """A Metaspace + Unigram tokenizer (mT5 / NLLB style).

    `tokenizers`' Unigram trainer seeds its pieces with substrings shared by at least two distinct *words*. In a
    world with a closed vocabulary most words sit inside no other word, so whole words never become pieces
    ("large" -> "la r ge", 2.5x longer sequences). Training on every line twice, once with a marker after each
    word, makes each word such a substring; pieces holding the marker are dropped afterwards.
    NFC only: NFKC would turn CJK full-width punctuation (？，) into ASCII and decoding would not give the text back.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFC()
    # punctuation apart from words: "circle", "circle?" and "circle." must be one token, or a question's word
    # never matches the scene's
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=list(specials), unk_token="<unk>")
    marked = [" ".join(w + _MARK for w in t.split(" ")) for t in texts]
    tok.train_from_iterator([*texts, *marked], trainer, length=2 * len(texts))
    # every character of the corpus is a piece; ASCII too, so English prompts never hit <unk>
    return _respecial(tok, specials, extra_chars=string.ascii_letters + string.digits + string.punctuation)


def _respecial(tok, specials: Sequence[str], extra_chars: str = ""):
    """The same Unigram pieces under another special-token layout (NLLB's ids differ from mT5's).

    Pieces are put in a canonical order (score rounded to 1e-6, then text): the trainer's scores differ between
    runs in the last bits (float sums in hash order), which would reorder near-ties and change token ids.
    `extra_chars` missing from the pieces are added last, below every trained score.
    """
    from tokenizers import AddedToken, Tokenizer, models

    spec = json.loads(tok.to_str())
    old = {t["content"] for t in spec["added_tokens"]}
    trained = [(p, round(s, 6)) for p, s in spec["model"]["vocab"] if p not in old and _MARK not in p]
    # the trainer appends the characters it did not pick as pieces with made-up scores (its lowest score minus
    # 1e-4, 2e-4, ...) in hash order, so which character gets which score changes from process to process. That
    # run of scores (walked up from the lowest while the steps stay ~1e-4; a real piece inside it joins it) and
    # `extra_chars` get one score below everything, in sorted order.
    scores = sorted({sc for _, sc in trained})
    top = scores[0] if scores else 0.0
    for sc in scores[1:]:
        if sc - top > _STEP:
            break
        top = sc
    floor = (scores[0] if scores else 0.0) - 1.0
    chars = {p for p, sc in trained if sc <= top} | set(extra_chars)
    pieces = sorted(((p, sc) for p, sc in trained if p not in chars), key=lambda ps: (-ps[1], ps[0]))
    pieces += [(ch, floor) for ch in sorted(chars)]
    new = Tokenizer(models.Unigram([(s, 0.0) for s in specials] + pieces, unk_id=list(specials).index("<unk>")))
    new.normalizer, new.pre_tokenizer, new.decoder = tok.normalizer, tok.pre_tokenizer, tok.decoder
    new.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in specials])
    return new


def t5_tokenizer(texts: Sequence[str], vocab_size: int):
    """T5/mT5-style tokenizer: Unigram + Metaspace, appends </s>, has <pad>=0 </s>=1 <unk>=2 <image>=3."""
    return _t5_from_unigram(_unigram(texts, vocab_size, T5_SPECIALS))


def _t5_from_unigram(unigram):
    """The T5-style tokenizer around trained Unigram pieces (mT0 shares its pieces with the translator)."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok = _respecial(unigram, T5_SPECIALS)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A $B </s>",
                                                       special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   additional_special_tokens=[IMAGE_TOKEN])


def bloom_tokenizer(texts: Sequence[str], vocab_size: int):
    """BLOOM-style tokenizer: byte-level BPE (never <unk>), no special tokens added, left padding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(BLOOM_SPECIALS),
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
                            length=len(texts))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", additional_special_tokens=[IMAGE_TOKEN], padding_side="left")


def nllb_tokenizer(texts: Sequence[str], codes: Sequence[str], vocab_size: int):
    """NLLB tokenizer trained on `texts`: Metaspace + BPE (NLLB's SentencePiece model is BPE), <s>=0 <pad>=1
    </s>=2 <unk>=3, the language codes, <mask>. As NLLB: source = [src_lang] tokens </s>; generation is forced to
    start with the target code.

    Built through ``NllbTokenizer(vocab=..., merges=...)``, the constructor ``from_pretrained`` calls: transformers 5
    rebuilds an NLLB tokenizer from the vocabulary and merges of tokenizer.json as BPE, so a tokenizer of any other
    model type (Unigram) would come back from disk splitting every word into characters.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import NllbTokenizer

    specials = [*NLLB_SPECIALS, *codes, "<mask>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    alphabet = sorted(set(string.ascii_letters + string.digits + string.punctuation) | {ch for t in texts for ch in t})
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                       initial_alphabet=alphabet), length=len(texts))
    spec = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in spec["merges"]]
    return NllbTokenizer(vocab=spec["vocab"], merges=merges, extra_special_tokens=list(codes), src_lang=codes[0])


def world_texts(texts: WorldText, langs: Sequence[str], limit: int | None = None) -> list[str]:
    """Text of the world in `langs` (scene descriptions, captions, questions, answers, descriptions, prompts),
    unique and in a fixed order; `limit` keeps an evenly spread sample of the sentences (tokenizer training time
    grows with the corpus). The instructions come last, repeated."""
    out = [scene_text(s) for s in texts.scenes]
    out += [caps[c] for _, variants in texts.captions for caps in variants for c in langs]
    out += [t for _, qas in texts.questions for c in langs for t in qas[c]]
    other = [c for c in langs if c != "en"]
    few = texts.scenes[:100]
    for r in annotate.describe(few, texts.seed, other) + annotate.nli(few, texts.seed, other) + \
            annotate.two_image(few, texts.seed, other):
        out += [t for c in langs for t in (r["en"] if c == "en" else r["gold"][c]).values()]
    out = list(dict.fromkeys(out))
    if limit is not None and len(out) > limit:
        alphabet = "".join(sorted({ch for t in out for ch in t}))  # rare characters survive the sampling
        out = [out[i] for i in np.linspace(0, len(out) - 1, limit).astype(int)] + [alphabet]
    lexicon = [realise(m, c) for m in sample_meanings() for c in langs]  # every word of every language, kept
    # the instructions are in every training example: repeated, so that their words become pieces
    prompts = [p.strip() for c in langs for p in caption_prompts(c) + vqa_prompts("", c)]
    return out + list(dict.fromkeys(lexicon)) + list(dict.fromkeys(prompts)) * 20


# ----------------------------------------------------------------------------------------------------------------
# one explicit training loop for every stand-in


def _fit(params: list[nn.Parameter], loss_fn: Callable[[int], torch.Tensor], *, steps: int, lr: float,
         warmup: int, desc: str, weight_decay: float = 0.01) -> list[float]:
    """AdamW, linear warm-up then cosine decay to 10 %, gradient clipping at 1; returns the loss per step."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    losses = []
    bar = tqdm(range(steps), desc=desc, unit="step", leave=False)
    for step in bar:
        loss = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    return losses


def example_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged per example, then over the batch (labels -100 are ignored).

    HF's token average lets a 12-token caption outweigh a 1-token answer twelvefold: the answers, where the
    reasoning is, would hardly be trained.
    """
    tokens = nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100,
                                         reduction="none").view(labels.shape)
    return (tokens.sum(1) / (labels != -100).sum(1).clamp(min=1)).mean()


def _pad(seqs: Sequence[Sequence[int]], value: int, left: bool = False) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    rows = [([value] * (width - len(s)) + list(s)) if left else (list(s) + [value] * (width - len(s))) for s in seqs]
    return torch.tensor(rows, dtype=torch.long)


def _loss_summary(losses: Sequence[float]) -> dict:
    k = max(1, min(20, len(losses) // 5))
    return {"loss_first": round(float(np.mean(losses[:k])), 4), "loss_last": round(float(np.mean(losses[-k:])), 4)}


# ----------------------------------------------------------------------------------------------------------------
# 1. vision encoder ("EVA-CLIP")


def image_processor(image_size: int = 64):
    """BLIP-2's image preprocessing (bicubic resize, CLIP mean/std) at the demo's resolution."""
    from transformers import BlipImageProcessorPil

    return BlipImageProcessorPil(size={"height": image_size, "width": image_size})


def pixels(scenes: Sequence[Scene], image_size: int, seed: int, batch: int = 500) -> torch.Tensor:
    """Rendered and preprocessed images, (N, 3, S, S); the renderer seed is the world seed, as in `mblip fetch`."""
    proc = image_processor(image_size)
    out = []
    for i in tqdm(range(0, len(scenes), batch), desc="render scenes", unit="batch", leave=False):
        imgs = [render(s, image_size, seed) for s in scenes[i:i + batch]]
        out.append(proc(imgs, return_tensors="pt")["pixel_values"])
    return torch.cat(out)


def attribute_labels(scenes: Sequence[Scene], grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels (shape-or-empty with 0 = empty, colour, size; -100 = not applicable) per column and per patch.

    Returns (N, 3 columns, 3) and (N, grid, grid, 3). A patch is labelled with the object whose bounding box holds
    the patch centre; the dense labels give every patch a target, a much stronger signal than 3 per image.
    """
    cols = torch.full((len(scenes), len(POSITIONS), 3), -100, dtype=torch.long)
    dense = torch.full((len(scenes), grid, grid, 3), -100, dtype=torch.long)
    cols[..., 0] = 0
    dense[..., 0] = 0
    centre = (torch.arange(grid) + 0.5) / grid  # patch centres as fractions of the side
    for i, s in enumerate(scenes):
        for o in s.objects:
            label = torch.tensor([1 + SHAPES.index(o.shape), list(COLOURS).index(o.colour), list(SIZES).index(o.size)])
            cols[i, o.column] = label
            cx, cy = object_centre(o, 1)
            r = SIZES[o.size] * 1.15  # the triangle's corners reach 1.15 r
            inside = ((centre[:, None] - cy).abs() <= r) & ((centre[None, :] - cx).abs() <= r)  # (row, col)
            dense[i][inside] = label
    return cols, dense


class AttributeProbe(nn.Module):
    """Attribute heads on a ViT: a patch head on every patch state, a column head on attention-pooled columns.

    Supervising *patch* states (not the CLS token) makes the patches themselves carry what and where, which is
    what the Q-Former later cross-attends to; the column pooling is attention (one learned query, softmax over the
    column's patches), as the Q-Former reads them. The two heads are separate: with one linear head, a column's
    logits would be the mean of its patch logits, and the many background patches would vote "empty".
    """

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.vit = vit
        cfg = vit.config
        grid = cfg.image_size // cfg.patch_size
        centre = (torch.arange(grid) + 0.5) * cfg.patch_size
        column = (centre * len(POSITIONS) / cfg.image_size).long().clamp(max=len(POSITIONS) - 1)
        outside = torch.stack([(column != c).repeat(grid) for c in range(len(POSITIONS))])  # (3, grid*grid)
        self.register_buffer("outside", outside, persistent=False)
        self.query = nn.Parameter(torch.zeros(cfg.hidden_size))
        self.column_head = nn.Linear(cfg.hidden_size, sum(N_ATTR.values()))
        self.patch_head = nn.Linear(cfg.hidden_size, sum(N_ATTR.values()))
        self.grid = grid

    def forward(self, pixel_values: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Logits per attribute: per column (B, 3, K) and per patch (B, grid, grid, K)."""
        states = self.vit(pixel_values=pixel_values).last_hidden_state[:, 1:]  # drop CLS
        scores = (states @ self.query)[:, None, :].masked_fill(self.outside, float("-inf"))  # (B, 3, P)
        cols = self.column_head(scores.softmax(-1) @ states)
        patches = self.patch_head(states).unflatten(1, (self.grid, self.grid))
        sizes = list(N_ATTR.values())
        return list(cols.split(sizes, dim=-1)), list(patches.split(sizes, dim=-1))

    @staticmethod
    def loss(logits: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        return sum(nn.functional.cross_entropy(lo.flatten(0, -2), y[..., k].flatten(), ignore_index=-100)
                   for k, lo in enumerate(logits))


@torch.no_grad()
def attribute_accuracy(probe: AttributeProbe, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Held-out accuracy per attribute: shape-or-empty over all columns, colour and size over occupied ones."""
    probe.eval()
    logits = [torch.cat(parts) for parts in zip(*(probe(x[i:i + 256])[0] for i in range(0, len(x), 256)))]
    probe.train()
    out = {}
    for k, (name, lo) in enumerate(zip(N_ATTR, logits)):
        keep = y[..., k] != -100
        out[name] = round((lo.argmax(-1)[keep] == y[..., k][keep]).float().mean().item(), 4)
    return out


def train_vision(out_dir: str | Path, train_x: torch.Tensor, train_y: tuple[torch.Tensor, torch.Tensor],
                 val_x: torch.Tensor, val_y: torch.Tensor, *, hidden_size: int = 64, num_layers: int = 3,
                 patch_size: int = 8,
                 steps: int = 900, batch_size: int = 64, lr: float = LR["vit"], seed: int = 0) -> dict:
    """Pretrain the demo's EVA-CLIP on its own: a tiny Blip2VisionModel with per-column attribute heads.

    out_dir: folder for the Blip2VisionModel + image processor (the heads are not saved).
    train_x, train_y: `pixels(...)` and `attribute_labels(...)` (column and patch labels) of the train scenes.
    val_x, val_y: pixels and column labels of held-out scenes.
    hidden_size, num_layers, patch_size: ViT size (4 attention heads, MLP 4x).
    steps, batch_size, lr: AdamW schedule. Batches are flipped left-right half the time, columns swapped to match.
    seed: seeds init and batch order.
    Returns held-out accuracy per attribute (shape, colour, size) and the loss at start and end.
    """
    from transformers import Blip2VisionConfig, Blip2VisionModel

    torch.manual_seed(seed)
    image_size = train_x.shape[-1]
    if image_size % patch_size:
        raise ValueError(f"image size {image_size} is not a multiple of patch_size {patch_size}; pick a divisor")
    cfg = Blip2VisionConfig(hidden_size=hidden_size, intermediate_size=4 * hidden_size, num_hidden_layers=num_layers,
                            num_attention_heads=4, image_size=image_size, patch_size=patch_size,
                            initializer_range=0.02)  # the default (1e-10) leaves a ViT that never trains
    vit = Blip2VisionModel(cfg)
    _sincos_positions(vit)
    probe = AttributeProbe(vit)
    gen = torch.Generator().manual_seed(seed)

    def step_loss(step: int) -> torch.Tensor:
        idx = torch.randint(len(train_x), (batch_size,), generator=gen)
        x, cols, patches = train_x[idx], train_y[0][idx], train_y[1][idx]
        flip = torch.rand(batch_size, generator=gen) < 0.5  # a mirrored scene is a scene with columns reversed
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        cols = torch.where(flip[:, None, None], cols.flip(1), cols)
        patches = torch.where(flip[:, None, None, None], patches.flip(2), patches)
        col_logits, patch_logits = probe(x)
        return probe.loss(col_logits, cols) + probe.loss(patch_logits, patches)

    losses = _fit(list(probe.parameters()), step_loss, steps=steps, lr=lr, warmup=30, desc="vit", weight_decay=0.05)
    metrics = {**attribute_accuracy(probe, val_x, val_y), **_loss_summary(losses)}
    vit.save_pretrained(out_dir)
    image_processor(image_size).save_pretrained(out_dir)
    return metrics


def _sincos_positions(vit: nn.Module) -> None:
    """Start the patch position embeddings from a 2-D sine/cosine code (as MAE): a ViT trained from scratch on a
    few thousand images learns *where* far faster than from random positions. They stay trainable."""
    emb = vit.embeddings.position_embedding
    d, grid = emb.shape[-1], vit.config.image_size // vit.config.patch_size
    q = d // 4
    freq = 1.0 / (100.0 ** (torch.arange(q) / q))
    ys, xs = torch.meshgrid(torch.arange(grid).float(), torch.arange(grid).float(), indexing="ij")
    xs, ys = xs.flatten()[:, None] * freq, ys.flatten()[:, None] * freq
    code = torch.cat([xs.sin(), xs.cos(), ys.sin(), ys.cos()], 1)
    with torch.no_grad():
        emb.zero_()
        emb[0, 1:, : code.shape[1]] = 0.5 * code


# ----------------------------------------------------------------------------------------------------------------
# text LMs: batches, generation, evaluation


def _encode(tok, texts: Sequence[str], add_special_tokens: bool = True) -> list[list[int]]:
    return tok(list(texts), add_special_tokens=add_special_tokens)["input_ids"]


class Seq2SeqBatcher:
    """Token ids of a seq2seq batch: source = prefix + instruction + </s>, labels = target + </s>.

    The prefix is the scene description's ids for a text-only LM; for BLIP-2 it is `num_query_tokens` <image>
    ids, where `Blip2Processor` puts them.
    """

    def __init__(self, tok, pad_id: int):
        self.tok, self.pad_id = tok, pad_id

    def __call__(self, prefixes: Sequence[list[int]], instructions: Sequence[str], targets: Sequence[str] | None):
        src = [p + ids for p, ids in zip(prefixes, _encode(self.tok, instructions))]
        batch = {"input_ids": _pad(src, self.pad_id)}
        batch["attention_mask"] = _pad([[1] * len(s) for s in src], 0)
        if targets is not None:
            batch["labels"] = _pad(_encode(self.tok, targets), -100)
        return batch


@torch.no_grad()
def _generate(model, batches: list[dict], tok, max_new_tokens: int, decoder_only: bool = False, **kwargs) -> list[str]:
    model.eval()
    out = []
    for batch in batches:
        ids = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, **kwargs)
        if decoder_only:
            ids = ids[:, batch["input_ids"].shape[1]:]  # decoder-only generate returns prompt + new tokens
        out += tok.batch_decode(ids, skip_special_tokens=True)
    model.train()
    return [o.strip() for o in out]


def _chunks(items: Sequence, size: int) -> list[Sequence]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _eval_items(scenes: Sequence[Scene], seed: int, langs: Sequence[str], n_scenes: int):
    """Held-out eval items: GQA-style questions (answers in English, as xGQA) and captions (3 references)."""
    scenes = list(scenes[:n_scenes])
    qas = _questions(scenes, seed, langs, make=annotate.gqa)
    caps = {i: {c: [v[c] for v in variants] for c in langs} for i, variants in _captions(scenes, seed, langs)}
    return scenes, qas, caps


def _text_lm_metrics(predict: Callable[[list[tuple[int, str]], int], list[str]], scenes, seed, langs,
                     n_scenes: int, answer_in: str = "en", statements: bool = False) -> dict:
    """Exact match of xGQA-style answers and caption accuracy (= one of the references), per language; with
    `statements`, also the accuracy on XVNLI-style hypotheses (3 per scene) and MaRVL-style statements over pairs of
    the same held-out scenes (the text LM's ceilings for those benchmarks).

    predict(items, max_new_tokens) -> texts, where items are (scene index or index pair, instruction).
    """
    scenes, qas, caps = _eval_items(scenes, seed, langs, n_scenes)
    out: dict = {"qa_em": {}, "caption_acc": {}}
    if statements:
        out.update(nli_acc={}, pair_acc={})
        hyps, pairs = _hypotheses(scenes, seed, langs), _statements(scenes, seed, langs)
    for c in langs:
        items = [(i, f"Question: {qa[c][0]} Short answer in {_name(answer_in)}:") for i, qa in qas]
        out["qa_em"][c] = _accuracy(predict(items, 5), [qa[answer_in][1] for _, qa in qas])
        items = [(i, f"Caption in {_name(c)}: ") for i in caps]
        preds = predict(items, 32)
        out["caption_acc"][c] = round(float(np.mean([_norm(p) in {_norm(r) for r in caps[i][c]}
                                                     for p, (i, _) in zip(preds, items)])), 4)
        if statements:
            preds = predict([(i, templates.eval_prompt("xvnli", h[c])) for i, h, _ in hyps], 3)
            out["nli_acc"][c] = _accuracy(preds, [label for _, _, label in hyps])
            preds = predict([(ij, templates.eval_prompt("marvl", t[c])) for ij, t, _ in pairs], 3)
            out["pair_acc"][c] = _accuracy(preds, [label for _, _, label in pairs])
    out.update(qa_n=len(qas), caption_n=len(caps))
    if statements:
        out.update(nli_n=len(hyps), pair_n=len(pairs))
    return out


def _accuracy(preds: Sequence[str], gold: Sequence[str]) -> float:
    return round(float(np.mean([_norm(p) == _norm(g) for p, g in zip(preds, gold)])), 4)


def _lm_init(model: nn.Module) -> None:
    """transformers 5 always ties mT5's output head to its input embeddings, without T5's d^-1/2 output scaling,
    and starts the embeddings at std 1: logits of std ~sqrt(d), an initial loss of ~70. Start them at d^-1/2."""
    if not getattr(model.config, "scale_decoder_outputs", False):
        emb = model.get_input_embeddings().weight
        nn.init.normal_(emb, std=emb.shape[1] ** -0.5)


# Encoder heads that start out each looking at one neighbouring token (offset = key position - query position),
# and heads that start out looking at other occurrences of the query's own token (`_match_heads`).
LOCAL_OFFSETS = (-1, -2, -3, 1, 2, 3)
LOCAL_BIAS = 6.0
MATCH_HEADS = (6, 7)
MATCH_SCALE = 1.0
T5_HEADS = 8


def _local_heads(model: nn.Module) -> None:
    """Start the first encoder heads of a T5-family LM attending to one neighbour each (`LOCAL_OFFSETS`).

    A scene description binds attributes by adjacency (`left large red circle`). Learned from scratch, T5's
    relative attention biases stay near zero for thousands of steps, so attention is position-blind and a tiny LM
    cannot tell which colour goes with which shape; it memorises scenes instead. Pretrained LMs have such local
    heads; the stand-ins start with them (the biases stay trainable). T5 shares the layer-0 biases with every
    encoder layer. Measured on English scene QA (held-out EM): d_model 128, 600 steps: 0.60 without, 0.64 with a
    +-3 window; d_model 64, 1,500 steps: these one-neighbour heads 0.77, a +-3 window 0.75, the two nearest
    neighbours only 0.78.
    """
    attn = model.get_encoder().block[0].layer[0].SelfAttention
    cfg = model.config
    with torch.no_grad():
        attn.relative_attention_bias.weight.zero_()
        for head, offset in enumerate(LOCAL_OFFSETS[:cfg.num_heads]):
            attn.relative_attention_bias.weight[_bucket(attn, cfg, offset), head] = LOCAL_BIAS


def _bucket(attn: nn.Module, cfg, offset: int) -> int:
    return int(attn._relative_position_bucket(torch.tensor(offset), bidirectional=True,
                                              num_buckets=cfg.relative_attention_num_buckets,
                                              max_distance=cfg.relative_attention_max_distance))


def _match_heads(model: nn.Module, seed: int = 0) -> None:
    """Start `MATCH_HEADS` of every encoder layer attending to the *other* occurrences of the query's token.

    Answering "Is there a green circle?" from `scene: left small green circle | ...` means finding the scene's
    `green circle` from the question's: content matching, which a tiny LM learns from scratch only after
    thousands of steps (it answers from the bag of words instead: "yes" whenever green is anywhere). Pretrained
    LMs have such duplicate-token heads. Here each match head's query and key maps are the same random orthonormal
    projection (times `MATCH_SCALE`), so equal tokens score highest, and the head's bias at offset 0 is -10, so a
    token's other occurrence beats the token itself (a token that occurs once mostly still looks at itself).
    Everything stays trainable. Measured on English scene QA (held-out EM), d_model 64, 1,500 steps: six local
    heads and two free 0.77; two local, four match and two free heads 0.86; six local and these two match heads
    0.92 (yes/no existence 0.57 -> 0.98, where 0.52 -> 0.89). In the nine-language "mT0" (3,000 steps) they gave
    0.63-0.71 per language against 0.68-0.73 without: most of its questions are not in the scene's language, whose
    words a German or Japanese word does not equal, unless the words start aligned (`_aligned_words`; both with
    `standins.aligned_words`). The English LM ("Flan-T5") starts with them with `standins.match_heads`; in the demo
    pipeline the BLIP-2 aligned to that stronger LM was no better.
    """
    cfg = model.config
    enc = model.get_encoder()
    heads = [h for h in MATCH_HEADS if h < cfg.num_heads]
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        attn0 = enc.block[0].layer[0].SelfAttention
        for h in heads:
            attn0.relative_attention_bias.weight[_bucket(attn0, cfg, 0), h] = -10.0
        dk = cfg.d_kv
        for block in enc.block:
            attn = block.layer[0].SelfAttention
            for h in heads:
                proj = torch.linalg.qr(torch.randn(cfg.d_model, dk, generator=gen))[0].T * MATCH_SCALE  # (d_kv, d_model)
                attn.q.weight[h * dk:(h + 1) * dk] = proj
                attn.k.weight[h * dk:(h + 1) * dk] = proj


# How close a word's embedding starts to the scene description's word for the same thing (`_aligned_words`).
WORD_ALIGN = 0.9
WORD_ATTRIBUTES = ("shape", "colour", "size", "position")  # what a scene description's words name


def _word_meanings(langs: Sequence[str]) -> list[tuple[dict[str, str | None], str, str]]:
    """(attribute values, language, text) for every one-object meaning the world's text is made of.

    Noun phrases with every combination of shape, colour, size, position and determiner, inside each question
    type, counting question and one-object caption, so every inflected form (case, number, gender, noun class) a
    language uses for a word turns up.
    """
    meanings: list[tuple[dict, object]] = []
    for shape, colour, size, position, det in itertools.product((None, *SHAPES), (None, *COLOURS), (None, *SIZES),
                                                                  (None, *POSITIONS), DETS):
        if shape is None and colour is None:
            continue
        values = dict(zip(WORD_ATTRIBUTES, (shape, colour, size, position)))
        ref = NP(shape=shape, colour=colour, size=size, position=position, det=det)
        meanings += [(values, ref), *((values, q(ref)) for q in (QExist, QColour, QShape, QSize, QWhere))]
        if size is None and position is None and det == "indef":
            meanings.append((values, QCount(NP(shape=shape, colour=colour))))
    for shape, colour, size, position in itertools.product(SHAPES, COLOURS, SIZES, POSITIONS):
        obj = Obj(shape=shape, colour=colour, size=size, position=position)
        values = dict(zip(WORD_ATTRIBUTES, (shape, colour, size, position)))
        meanings += [(values, Caption((obj,), variant)) for variant in range(N_CAPTION_VARIANTS)]
    out = []
    for values, meaning in meanings:
        for code in langs:
            try:
                out.append((values, code, realise(meaning, code)))
            except ValueError:  # a combination a language has no construction for
                continue
    none = dict.fromkeys(WORD_ATTRIBUTES)  # the instructions name no attribute value
    for code in langs:
        out += [(none, code, text) for text in (*caption_prompts(code), *vqa_prompts("", code))]
    return out


def word_anchors(tok, langs: Sequence[str]) -> dict[int, list[int]]:
    """{token id: the scene description's token ids for the same attribute value}, for every piece of every
    language that only ever appears in text about that one value ("grünen", "緑", "kijani" -> "green").

    A piece qualifies when, across `_word_meanings`, every meaning whose text holds it has the same value of one
    attribute (and that value is set). Pieces shared between values (endings, particles) and the scene's own
    pieces are left out, and so are pieces of the instructions and single letters outside CJK (which also spell
    other words).
    """
    records = _word_meanings(langs)
    ids = _encode(tok, [text for _, _, text in records], add_special_tokens=False)
    seen: dict[int, dict[str, set]] = {}
    for (values, _, _), piece_ids in zip(records, ids):
        for i in set(piece_ids):
            slots = seen.setdefault(i, {a: set() for a in WORD_ATTRIBUTES})
            for a, v in values.items():
                slots[a].add(v)
    scene = {v: _encode(tok, [v], add_special_tokens=False)[0] for v in (*SHAPES, *COLOURS, *SIZES, *POSITIONS)}
    scene_ids = {i for v in scene.values() for i in v}
    out = {}
    for i, slots in seen.items():
        owned = [next(iter(vs)) for vs in slots.values() if len(vs) == 1 and None not in vs]
        text = tok.convert_ids_to_tokens(i).lstrip("\u2581")
        letter = len(text) == 1 and not unicodedata.name(text, "").startswith(("CJK", "HIRAGANA", "KATAKANA"))
        if len(owned) == 1 and not letter and i not in scene_ids and i not in tok.all_special_ids:
            out[i] = scene[owned[0]]
    return out


def _aligned_words(model: nn.Module, tok, langs: Sequence[str], seed: int = 0) -> int:
    """Start every language's words for a colour, shape, size or position near the scene description's word.

    A pretrained multilingual LM maps "grün", "緑" and "green" to nearby embeddings; one trained from scratch
    on a few thousand scenes does not, so a German question's "grünen Kreis" never finds the scene's
    `green circle` (English questions do). Each piece of `word_anchors` starts at WORD_ALIGN x (its anchors'
    mean embedding) + sqrt(1 - WORD_ALIGN^2) x its own random one (cosine WORD_ALIGN); everything stays
    trainable. Returns the number of pieces moved.
    """
    anchors = word_anchors(tok, langs)
    emb = model.get_input_embeddings().weight
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i, anchor in sorted(anchors.items()):
            target = emb[anchor].mean(0)
            own = torch.randn(emb.shape[1], generator=gen) * target.norm() / emb.shape[1] ** 0.5
            emb[i] = WORD_ALIGN * target + math.sqrt(1 - WORD_ALIGN ** 2) * own
    return len(anchors)


def _train_text_seq2seq(model, tok, sampler: TaskSampler,
                        scene_ids: list[list[int]], *, steps: int, batch_size: int, lr: float, seed: int,
                        desc: str) -> list[float]:
    """Train a seq2seq LM on (scene description + instruction -> target) examples drawn by `sampler`."""
    rng = random.Random(seed)
    batcher = Seq2SeqBatcher(tok, tok.pad_token_id)

    def step_loss(step: int) -> torch.Tensor:
        ex = sampler.batch(rng, batch_size)
        batch = batcher([scene_prefix(scene_ids, i) for i, _, _ in ex], [e[1] for e in ex], [e[2] for e in ex])
        return example_loss(model(**batch).logits, batch["labels"])

    return _fit([p for p in model.parameters() if p.requires_grad], step_loss, steps=steps, lr=lr, warmup=30, desc=desc)


def _seq2seq_predictor(model, tok, scene_ids: list[list[int]], batch_size: int = 200):
    batcher = Seq2SeqBatcher(tok, tok.pad_token_id)

    def predict(items: list[tuple[int, str]], max_new_tokens: int) -> list[str]:
        batches = [batcher([scene_prefix(scene_ids, i) for i, _ in chunk], [t for _, t in chunk], None)
                   for chunk in _chunks(items, batch_size)]
        return _generate(model, batches, tok, max_new_tokens)

    return predict


def _scene_ids(tok, scenes: Sequence[Scene]) -> list[list[int]]:
    return _encode(tok, [scene_text(s) for s in scenes], add_special_tokens=False)


# ----------------------------------------------------------------------------------------------------------------
# 2. English LM ("Flan-T5")


def train_english_lm(out_dir: str | Path, texts: WorldText, val_scenes: Sequence[Scene], *,
                     d_model: int = 128, num_layers: int = 2, vocab_size: int = 800, steps: int = 350,
                     batch_size: int = 64, lr: float = LR["flan_t5"], n_eval: int = 40, seed: int = 0,
                     match_heads: bool = False) -> dict:
    """The demo's Flan-T5: an English-only T5 (gated-gelu) with its own tokenizer, instruction-tuned on text.

    out_dir: folder for T5ForConditionalGeneration + tokenizer.
    texts: the train scenes' text (`WorldText`, with English); val_scenes: held-out scenes for the metrics.
    d_model, num_layers: size (num_layers encoder + num_layers decoder layers, 8 heads of which 6 start local
        (`_local_heads`), d_ff = 2 d_model).
    vocab_size: upper bound of the English Unigram vocabulary (the world has a few hundred English words).
    steps, batch_size, lr: training schedule; seed: init and example order.
    n_eval: held-out scenes for the metrics (4 questions each; captions).
    match_heads: start the two other heads as duplicate-token heads (`_match_heads`).
    Returns English held-out answer exact match and caption accuracy.
    """
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    tok = t5_tokenizer(world_texts(texts, ["en"]), vocab_size)
    cfg = T5Config(vocab_size=len(tok), d_model=d_model, d_kv=max(4, d_model // T5_HEADS), d_ff=2 * d_model,
                   num_layers=num_layers, num_decoder_layers=num_layers, num_heads=T5_HEADS,
                   feed_forward_proj="gated-gelu", dropout_rate=0.0,
                   pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    model = T5ForConditionalGeneration(cfg)
    _lm_init(model)
    _local_heads(model)
    if match_heads:
        _match_heads(model, seed)
    losses = _train_text_seq2seq(model, tok, TaskSampler(texts, ["en"]), _scene_ids(tok, texts.scenes), steps=steps,
                                 batch_size=batch_size, lr=lr, seed=seed, desc="flan-t5")
    predict = _seq2seq_predictor(model, tok, _scene_ids(tok, val_scenes))
    m = _text_lm_metrics(predict, val_scenes, texts.seed, ["en"], n_eval)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return {"vqa_em": m["qa_em"]["en"], "caption_acc": m["caption_acc"]["en"], **_loss_summary(losses)}


# ----------------------------------------------------------------------------------------------------------------
# 3. English BLIP-2: frozen ViT + new Q-Former + projection, aligned to the frozen English LM


@torch.no_grad()
def vision_features(vit: nn.Module, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Last hidden states of the frozen ViT, (N, 1 + patches, d): computed once, the Q-Former reads them."""
    vit.eval()
    return torch.cat([vit(pixel_values=x[i:i + batch]).last_hidden_state for i in range(0, len(x), batch)])


def _query_features(blip2, feats: torch.Tensor) -> torch.Tensor:
    """Projected Q-Former outputs from cached ViT states: HF's get_image_features minus the ViT."""
    queries = blip2.query_tokens.expand(feats.shape[0], -1, -1)
    mask = torch.ones(feats.shape[:-1], dtype=torch.long)
    out = blip2.qformer(query_embeds=queries, encoder_hidden_states=feats, encoder_attention_mask=mask)
    return blip2.language_projection(out.last_hidden_state)


def _blip2_forward(blip2, queries: torch.Tensor, batch: dict):
    """HF's BLIP-2 forward with the image part given (its `mm_encoder_outputs` hook): the image tokens get
    `queries`, the projected Q-Former outputs (`_query_features` of cached ViT states)."""
    from transformers.models.blip_2.modeling_blip_2 import BaseModelOutputWithVisionQformerOutputs

    image = BaseModelOutputWithVisionQformerOutputs(pooler_output=queries)
    return blip2(pixel_values=None, mm_encoder_outputs={"image": image}, **batch)


def text_target_loss(queries: torch.Tensor, scene_ids: Sequence[list[int]], embeddings: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of query k to the LM's input embedding of the scene description's token k, relative
    to the embeddings' mean square; queries past a description's end (or descriptions past the queries) are free.

    queries: projected Q-Former outputs (B, Q, d); scene_ids: each example's description ids (`_scene_ids`);
    embeddings: the frozen LM's input embedding matrix (V, d).
    """
    target = torch.zeros_like(queries)
    mask = torch.zeros(queries.shape[:2])
    for b, ids in enumerate(scene_ids):
        ids = ids[: queries.shape[1]]
        target[b, : len(ids)] = embeddings[ids].detach()
        mask[b, : len(ids)] = 1
    per_query = (queries - target).pow(2).mean(-1) / embeddings.detach().pow(2).mean()
    return (per_query * mask).sum() / mask.sum()


def train_blip2_english(out_dir: str | Path, vit_dir: str | Path, lm_dir: str | Path, texts: WorldText,
                        val_scenes: Sequence[Scene], train_x: torch.Tensor, val_x: torch.Tensor, *,
                        qformer_hidden: int = 96, qformer_layers: int = 2, num_query_tokens: int = 8,
                        steps: int = 300, batch_size: int = 64, lr: float = LR["blip2"], n_eval: int = 40,
                        text_target: float = 0.0, seed: int = 0) -> dict:
    """The English BLIP-2: the pretrained ViT (frozen) + a new Q-Former + projection, aligned to the frozen LM.

    out_dir: folder for the complete Blip2ForConditionalGeneration + tokenizer + Blip2Processor.
    vit_dir, lm_dir: folders written by `train_vision` and `train_english_lm`.
    texts: the train scenes' text (`WorldText`, with English); `train_x` are their images (`pixels(...)`).
    val_scenes: held-out scenes whose images are `val_x`.
    qformer_hidden, qformer_layers: Q-Former size (4 heads, cross-attention in every layer).
    num_query_tokens: learned queries = visual tokens the LM sees.
    steps, batch_size, lr: training schedule (Q-Former, queries and projection train; ViT and LM are frozen).
    n_eval: held-out scenes for the metrics, generated through the saved model's own `generate(pixel_values=...)`.
    text_target: weight of the scene-description target (`text_target_loss`) added to the LM loss; 0 = LM loss
        only. The real BLIP-2 learned from 129M image-text pairs what the LM reads; 4,000 scenes teach a Q-Former
        that slowly through the frozen LM alone (held-out VQA 0.61 at 3,000 steps, README). The target tells the
        Q-Former directly: write the scene description into the LM's input space, one query per token (so it needs
        `num_query_tokens` >= the longest description's tokens for full effect; longer ones are cut).
    Returns English held-out answer exact match and caption accuracy.
    """
    from transformers import (AutoTokenizer, Blip2Config, Blip2ForConditionalGeneration, Blip2Processor,
                              Blip2QFormerConfig, Blip2VisionModel, T5ForConditionalGeneration)

    torch.manual_seed(seed)
    vit = Blip2VisionModel.from_pretrained(vit_dir)
    lm = T5ForConditionalGeneration.from_pretrained(lm_dir)
    tok = AutoTokenizer.from_pretrained(lm_dir)
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    qcfg = Blip2QFormerConfig(hidden_size=qformer_hidden, intermediate_size=4 * qformer_hidden,
                              num_hidden_layers=qformer_layers, num_attention_heads=4, cross_attention_frequency=1,
                              initializer_range=0.02, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    cfg = Blip2Config(vision_config=vit.config.to_dict(), qformer_config=qcfg.to_dict(),
                      text_config=lm.config.to_dict(), num_query_tokens=num_query_tokens, image_token_index=image_id,
                      initializer_range=0.02)
    blip2 = Blip2ForConditionalGeneration(cfg)
    blip2.vision_model.load_state_dict(vit.state_dict())
    blip2.language_model.load_state_dict(lm.state_dict())
    with torch.no_grad():
        blip2.query_tokens.normal_(std=0.02)  # HF starts them at zeros: identical queries stay identical
    for name, p in blip2.named_parameters():
        p.requires_grad_(name.startswith(("qformer.", "query_tokens", "language_projection.")))

    feats = vision_features(blip2.vision_model, train_x)  # the ViT is frozen: once, not every step
    prefix = [image_id] * num_query_tokens
    sampler = TaskSampler(texts, ["en"])
    batcher = Seq2SeqBatcher(tok, tok.pad_token_id)
    rng = random.Random(seed)
    scene_ids = _scene_ids(tok, texts.scenes) if text_target else None
    embeddings = blip2.language_model.get_input_embeddings().weight

    def step_loss(step: int) -> torch.Tensor:
        ex = [sampler(rng) for _ in range(batch_size)]
        scenes = [e[0] for e in ex]
        batch = batcher([prefix] * batch_size, [e[1] for e in ex], [e[2] for e in ex])
        queries = _query_features(blip2, feats[scenes])
        loss = example_loss(_blip2_forward(blip2, queries, batch).logits, batch["labels"])
        if text_target:
            loss = loss + text_target * text_target_loss(queries, [scene_ids[i] for i in scenes], embeddings)
        return loss

    blip2.language_model.eval()  # frozen, no dropout
    losses = _fit([p for p in blip2.parameters() if p.requires_grad], step_loss, steps=steps, lr=lr, warmup=30,
                  desc="blip2-en")
    blip2.save_pretrained(out_dir)
    processor = Blip2Processor(image_processor(vit.config.image_size), tok, num_query_tokens=num_query_tokens)
    processor.save_pretrained(out_dir)

    def predict(items: list[tuple[int, str]], max_new_tokens: int) -> list[str]:
        # the real path: pixels -> ViT -> Q-Former -> LM, as every user of the folder runs it
        batches = []
        for chunk in _chunks(items, 200):
            b = batcher([prefix] * len(chunk), [t for _, t in chunk], None)
            b["pixel_values"] = val_x[[i for i, _ in chunk]]
            batches.append(b)
        return _generate(blip2, batches, tok, max_new_tokens)

    m = _text_lm_metrics(predict, val_scenes, texts.seed, ["en"], n_eval)
    return {"vqa_em": m["qa_em"]["en"], "caption_acc": m["caption_acc"]["en"], **_loss_summary(losses)}


# ----------------------------------------------------------------------------------------------------------------
# 4. multilingual seq2seq LM ("mT0")


def train_mt0(out_dir: str | Path, texts: WorldText, val_scenes: Sequence[Scene], tokenizer, *,
              langs: Sequence[str] = LANGUAGES, d_model: int = 128, num_layers: int = 2, steps: int = 400,
              batch_size: int = 64, lr: float = LR["mt0"], n_eval: int = 40, seed: int = 0,
              nli_share: float = 0.0, pair_share: float = 0.0, aligned_words: bool = False) -> dict:
    """The demo's mT0: a multilingual mT5 (gated-gelu) that captions and answers in every language from text.

    out_dir: folder for MT5ForConditionalGeneration + tokenizer.
    texts: the train scenes' text in (at least) `langs`; val_scenes: held-out scenes for the metrics.
    tokenizer: the multilingual T5-style tokenizer (`t5_tokenizer(world_texts(...))`).
    langs: language codes it learns (captions in each; questions in each, answers in English or that language).
    d_model, num_layers: size (num_layers encoder + num_layers decoder layers, 8 heads of which 6 start local
        (`_local_heads`), d_ff = 2 d_model).
    aligned_words: start every language's words for a colour, shape, size or position near the scene
        description's word (`_aligned_words`) and two encoder heads of every layer as match heads (`_match_heads`),
        so a German question's "grünen Kreis" can find the scene's `green circle`. Match heads alone did not help
        the nine-language LM (its questions are mostly not in the scene's language); together, at 6,000 steps,
        they lift held-out QA from 0.71-0.76 to 0.80-0.93 per language (README, The stand-ins).
    steps, batch_size, lr: training schedule; seed: init and example order.
    nli_share, pair_share: shares of XVNLI- and MaRVL-style statements in the instruction data (`TaskSampler`;
        texts must hold them).
    n_eval: held-out scenes for the metrics.
    Returns per-language held-out xGQA-style exact match (English answers) and caption accuracy, and with
    statements in the data, the accuracy on held-out hypotheses and scene-pair statements.
    """
    from transformers import MT5Config, MT5ForConditionalGeneration

    torch.manual_seed(seed)
    tok = tokenizer
    cfg = MT5Config(vocab_size=len(tok), d_model=d_model, d_kv=max(4, d_model // T5_HEADS), d_ff=2 * d_model,
                    num_layers=num_layers, num_decoder_layers=num_layers, num_heads=T5_HEADS, dropout_rate=0.0,
                    pad_token_id=0, eos_token_id=1,
                    decoder_start_token_id=0)
    model = MT5ForConditionalGeneration(cfg)
    _lm_init(model)
    _local_heads(model)
    if aligned_words:
        _aligned_words(model, tok, langs, seed)
        _match_heads(model, seed)
    sampler = TaskSampler(texts, langs, nli_share=nli_share, pair_share=pair_share)
    losses = _train_text_seq2seq(model, tok, sampler, _scene_ids(tok, texts.scenes), steps=steps,
                                 batch_size=batch_size, lr=lr, seed=seed, desc="mt0")
    predict = _seq2seq_predictor(model, tok, _scene_ids(tok, val_scenes))
    m = _text_lm_metrics(predict, val_scenes, texts.seed, langs, n_eval, statements=bool(nli_share or pair_share))
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return {**m, **_loss_summary(losses)}


# ----------------------------------------------------------------------------------------------------------------
# 5. multilingual causal LM ("BLOOMZ")


def train_bloomz(out_dir: str | Path, texts: WorldText, val_scenes: Sequence[Scene], tokenizer, *,
                 langs: Sequence[str] = LANGUAGES, hidden_size: int = 128, num_layers: int = 3, steps: int = 200,
                 batch_size: int = 64, lr: float = LR["bloomz"], n_eval: int = 40, seed: int = 0,
                 nli_share: float = 0.0, pair_share: float = 0.0) -> dict:
    """The demo's BLOOMZ: a multilingual BloomForCausalLM on the same tasks as `train_mt0`.

    A training sequence is prompt (scene description + instruction) + target + </s>; the loss is on the target.
    tokenizer: byte-level BPE (`bloom_tokenizer(world_texts(...))`). Other arguments as in `train_mt0`.
    """
    from transformers import BloomConfig, BloomForCausalLM

    torch.manual_seed(seed)
    tok = tokenizer
    cfg = BloomConfig(vocab_size=len(tok), hidden_size=hidden_size, n_layer=num_layers, n_head=4,
                      hidden_dropout=0.0, attention_dropout=0.0, pad_token_id=tok.pad_token_id,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, initializer_range=0.02)
    model = BloomForCausalLM(cfg)
    sampler = TaskSampler(texts, langs, nli_share=nli_share, pair_share=pair_share)
    train_ids = _scene_ids(tok, texts.scenes)
    rng = random.Random(seed)
    eos, pad = tok.eos_token_id, tok.pad_token_id

    def step_loss(step: int) -> torch.Tensor:
        ex = sampler.batch(rng, batch_size)
        prompts = _bloom_prompts(tok, [scene_prefix(train_ids, i) for i, _, _ in ex], [e[1] for e in ex])
        targets = [ids + [eos] for ids in _encode(tok, [e[2] for e in ex], add_special_tokens=False)]
        seqs = [p + t for p, t in zip(prompts, targets)]
        labels = [[-100] * len(p) + t for p, t in zip(prompts, targets)]  # the loss is on the target only
        logits = model(input_ids=_pad(seqs, pad), attention_mask=_pad([[1] * len(s) for s in seqs], 0)).logits
        return example_loss(logits[:, :-1], _pad(labels, -100)[:, 1:])  # token t predicts token t + 1

    losses = _fit(list(model.parameters()), step_loss, steps=steps, lr=lr, warmup=30, desc="bloomz")
    val_ids = _scene_ids(tok, val_scenes)

    def predict(items: list[tuple[int, str]], max_new_tokens: int) -> list[str]:
        batches = []
        for chunk in _chunks(items, 200):
            prompts = _bloom_prompts(tok, [scene_prefix(val_ids, i) for i, _ in chunk], [t for _, t in chunk])
            batches.append({"input_ids": _pad(prompts, pad, left=True),  # generation continues the prompt
                            "attention_mask": _pad([[1] * len(p) for p in prompts], 0, left=True)})
        return _generate(model, batches, tok, max_new_tokens, decoder_only=True, pad_token_id=pad)

    m = _text_lm_metrics(predict, val_scenes, texts.seed, langs, n_eval, statements=bool(nli_share or pair_share))
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return {**m, **_loss_summary(losses)}


def _bloom_prompts(tok, scene_ids: Sequence[list[int]], instructions: Sequence[str]) -> list[list[int]]:
    # a space between scene and instruction, as in the seq2seq models' Metaspace tokens
    return [s + ids for s, ids in zip(scene_ids, _encode(tok, [" " + t for t in instructions],
                                                             add_special_tokens=False))]


# ----------------------------------------------------------------------------------------------------------------
# 6. translator ("NLLB")


def parallel_text(texts: WorldText, langs: Sequence[str]) -> list[dict[str, str]]:
    """English sentences with their realiser translations: captions, questions, answers, object names, and the
    multi-sentence descriptions of a few scenes (every field the translate stage sends through the translator)."""
    rows = [caps for _, variants in texts.captions for caps in variants]
    rows += [{c: qa[c][0] for c in langs} for _, qa in texts.questions]
    rows += [{c: qa[c][1] for c in langs} for _, qa in texts.questions]
    other = [c for c in langs if c != "en"]
    records = annotate.classify(texts.scenes, texts.seed, other)
    records += annotate.describe(texts.scenes[:300], texts.seed, other)
    for r in records:
        field = "label" if r["task"] == "classify" else "description"
        rows.append({"en": r["en"][field], **{c: r["gold"][c][field] for c in other}})
    unique = {row["en"]: row for row in rows}  # an English sentence has one realisation per language
    return [{c: row[c] for c in langs} for row in unique.values()]


def train_nllb(out_dir: str | Path, texts: WorldText, val_scenes: Sequence[Scene], corpus: Sequence[str], *,
               langs: Sequence[str] = LANGUAGES, d_model: int = 128, num_layers: int = 2, steps: int = 900,
               vocab_size: int = 2500,
               batch_size: int = 64, lr: float = LR["nllb"], n_eval: int = 40, seed: int = 0) -> dict:
    """The demo's NLLB: an M2M100 translating between English and the other languages, used the NLLB way.

    Both directions, as the real NLLB: English -> x makes the training data, x -> English is what the translate
    stage's back-translation checks use (the VQA answer rule keeps an answer's translation only when it translates
    back to the English answer; the quality report's round-trip chrF).

    The tokenizer puts the source-language code first (`tokenizer.src_lang = "eng_Latn"`); generation is forced to
    start with the target code (`forced_bos_token_id=tokenizer.convert_tokens_to_ids("deu_Latn")`). Its errors
    depend on `steps`: at 900 most held-out questions come out wrong, often asking something else ("What shape" ->
    "Welche Farbe"); the demo's 3,000 leave a few per cent wrong, as machine-translated training data has.

    out_dir: folder for M2M100ForConditionalGeneration + NllbTokenizer.
    texts: the train scenes' text in `langs` (`WorldText`); val_scenes: held-out scenes for the metrics.
    corpus: multilingual text its BPE tokenizer is trained on (`world_texts`), `vocab_size` pieces at most.
    langs: English first, then the target languages (codes from `mblip.languages`).
    d_model, num_layers: size (num_layers encoder + num_layers decoder layers, 4 heads, FFN 2 d_model).
    steps, batch_size, lr: training schedule; seed: init and example order.
    n_eval: held-out scenes; up to 50 different captions and 50 different questions of theirs are translated.
    Returns per target language: sentence accuracy (exact match with the realiser) and character similarity, both
    for English -> x and (``*_to_en``) for x -> English, and the English -> x exact match on the questions alone
    (`question_acc`: a question's one wrong word, "colour" for "shape", changes its answer, and costs little
    character similarity).
    """
    from transformers import M2M100Config, M2M100ForConditionalGeneration

    if langs[0] != "en":
        raise ValueError(f"train_nllb translates from English: langs must start with 'en', got {list(langs)}")
    torch.manual_seed(seed)
    codes = {c: language_table.get(c).nllb for c in langs}
    tok = nllb_tokenizer(corpus, list(codes.values()), vocab_size)
    tok.src_lang = codes["en"]
    cfg = M2M100Config(vocab_size=len(tok), d_model=d_model, encoder_layers=num_layers, decoder_layers=num_layers,
                       encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=2 * d_model,
                       decoder_ffn_dim=2 * d_model, max_position_embeddings=256, dropout=0.0, attention_dropout=0.0,
                       activation_dropout=0.0, init_std=0.02, scale_embedding=True, pad_token_id=tok.pad_token_id,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       decoder_start_token_id=tok.eos_token_id)  # NLLB: decoder starts at </s>, then the language
    model = M2M100ForConditionalGeneration(cfg)
    rows = parallel_text(texts, langs)
    # answers and class names (one or two words) are a few dozen of the ~15k sentences, yet the translate stage
    # translates and back-translates exactly them (the VQA answer rule): draw them a quarter of the time
    short = [r for r in rows if len(r["en"].split()) <= 2]
    targets = list(langs[1:])
    rng = random.Random(seed)

    def pick():
        return rng.choice(short if short and rng.random() < 0.25 else rows)

    def batch_for(sources: list[str], lang: list[str], target_texts: list[str] | None = None) -> dict:
        enc = tok(sources, padding=True, return_tensors="pt")
        batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if target_texts is not None:
            ids = _encode(tok, target_texts, add_special_tokens=False)
            batch["labels"] = _pad([[tok.convert_tokens_to_ids(codes[c])] + t + [tok.eos_token_id]
                                    for c, t in zip(lang, ids)], -100)
        return batch

    from transformers.modeling_outputs import BaseModelOutput

    per_source = len(targets)

    def to_english(sources: list[str], src_langs: list[str], english: list[str] | None = None) -> dict:
        # NLLB's source layout, one source language per row: [src code] text </s>
        ids = _encode(tok, sources, add_special_tokens=False)
        rows_ = [[tok.convert_tokens_to_ids(codes[c])] + t + [tok.eos_token_id] for c, t in zip(src_langs, ids)]
        batch = {"input_ids": _pad(rows_, tok.pad_token_id), "attention_mask": _pad([[1] * len(r) for r in rows_], 0)}
        if english is not None:
            batch["labels"] = _pad([[tok.convert_tokens_to_ids(codes["en"])] + t + [tok.eos_token_id]
                                    for t in _encode(tok, english, add_special_tokens=False)], -100)
        return batch

    def step_loss(step: int) -> torch.Tensor:
        # English -> x: each source sentence goes to every target language; the encoder runs once per source, and
        # only the language token tells the decoder what to do with the same source, which is what it has to learn
        sources = [pick() for _ in range(max(1, batch_size // per_source))]
        batch = batch_for([r["en"] for r in sources], [c for _ in sources for c in targets],
                          [r[c] for r in sources for c in targets])
        encoded = model.get_encoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        hidden = encoded.last_hidden_state.repeat_interleave(per_source, 0)
        mask = batch["attention_mask"].repeat_interleave(per_source, 0)
        out = model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), attention_mask=mask,
                    labels=batch["labels"])
        forward = example_loss(out.logits, batch["labels"])
        # x -> English: half as many rows, each from a random target language back into English
        back = [(pick(), rng.choice(targets)) for _ in range(max(1, batch_size // 2))]
        batch = to_english([r[c] for r, c in back], [c for _, c in back], [r["en"] for r, _ in back])
        return forward + example_loss(model(**batch).logits, batch["labels"])

    losses = _fit(list(model.parameters()), step_loss, steps=steps, lr=lr, warmup=30, desc="nllb")

    # held-out: captions and questions of unseen scenes, up to 50 different ones of each
    val = WorldText(val_scenes[:n_eval], texts.seed, langs)
    captions = list({row["en"]: row for _, variants in val.captions for row in variants}.values())[:50]
    questions = list({qa["en"][0]: {c: qa[c][0] for c in langs} for _, qa in val.questions}.values())[:50]
    pairs = captions + questions
    sentence_acc, question_acc, char_sim = {}, {}, {}
    for c in targets:
        forced = tok.convert_tokens_to_ids(codes[c])
        batches = [batch_for([r["en"] for r in chunk], [c] * len(chunk)) for chunk in _chunks(pairs, 200)]
        preds = _generate(model, batches, tok, 48, forced_bos_token_id=forced)
        sentence_acc[c] = round(float(np.mean([p == r[c] for p, r in zip(preds, pairs)])), 4)
        question_acc[c] = round(float(np.mean([p == r[c] for p, r in zip(preds[len(captions):], questions)])), 4)
        char_sim[c] = round(float(np.mean([difflib.SequenceMatcher(None, p, r[c]).ratio()
                                           for p, r in zip(preds, pairs)])), 4)
        english = tok.convert_tokens_to_ids(codes["en"])
        batches = [to_english([r[c] for r in chunk], [c] * len(chunk)) for chunk in _chunks(pairs, 200)]
        preds = _generate(model, batches, tok, 48, forced_bos_token_id=english)
        sentence_acc[f"{c}_to_en"] = round(float(np.mean([p == r["en"] for p, r in zip(preds, pairs)])), 4)
        char_sim[f"{c}_to_en"] = round(float(np.mean([difflib.SequenceMatcher(None, p, r["en"]).ratio()
                                                      for p, r in zip(preds, pairs)])), 4)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return {"sentence_acc": sentence_acc, "question_acc": question_acc, "char_similarity": char_sim,
            "n_sentences": len(pairs), "n_questions": len(questions), **_loss_summary(losses)}


# ----------------------------------------------------------------------------------------------------------------
# 7. everything, in order


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
