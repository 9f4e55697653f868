"""The text LMs of the stand-ins (`mblip.demo.standins`): the English "Flan-T5", the multilingual "mT0" and
"BLOOMZ", and the translator "NLLB"."""

from __future__ import annotations

import difflib
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mblip import languages as language_table
from mblip.demo import annotate
from mblip.demo.realise import LANGUAGES
from mblip.demo.standins.common import (LR, Seq2SeqBatcher, _chunks, _encode, _fit, _generate, _loss_summary, _pad,
                                        _scene_ids, _text_lm_metrics, example_loss)
from mblip.demo.standins.priors import T5_HEADS, _aligned_words, _lm_init, _local_heads, _match_heads
from mblip.demo.standins.text import TaskSampler, WorldText, nllb_tokenizer, scene_prefix, t5_tokenizer, world_texts
from mblip.demo.world import Scene


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


# ----------------------------------------------------------------------------------------------------------------
# English LM ("Flan-T5")


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
# multilingual seq2seq LM ("mT0")


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
# multilingual causal LM ("BLOOMZ")


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
# translator ("NLLB")


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
