"""Initialisation priors of the stand-in LMs (`mblip.demo.standins`): what a pretrained LM would bring along.

Embeddings at d^-1/2 (`_lm_init`), encoder heads that start on a neighbouring token (`_local_heads`) or on the other
occurrences of the query's own token (`_match_heads`), and every language's words for a colour, shape, size or
position started near the scene description's word (`word_anchors`, `_aligned_words`). Everything stays trainable.
"""

from __future__ import annotations

import itertools
import math
import unicodedata
from collections.abc import Sequence

import torch
from torch import nn

from mblip.demo.realise import (DETS, N_CAPTION_VARIANTS, NP, Caption, QColour, QCount, QExist, QShape, QSize, QWhere,
                                 realise)
from mblip.demo.standins.common import _encode
from mblip.demo.standins.text import caption_prompts, vqa_prompts
from mblip.demo.world import COLOURS, POSITIONS, SHAPES, SIZES, Obj


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
    projection, so equal tokens score highest, and the head's bias at offset 0 is -10, so a token's other occurrence
    beats the token itself (a token that occurs once mostly still looks at itself).
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
                proj = torch.linalg.qr(torch.randn(cfg.d_model, dk, generator=gen))[0].T  # (d_kv, d_model)
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
