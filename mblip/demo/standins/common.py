"""What every stand-in trainer shares (`mblip.demo.standins`): the learning rates, the one training loop
(`_fit`), the per-example loss, padding, and the text LMs' batches, greedy generation and held-out metrics."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mblip import templates
from mblip.demo import annotate
from mblip.demo.standins.text import _captions, _hypotheses, _name, _norm, _questions, _statements, scene_text
from mblip.demo.world import Scene

# Learning rates: the T5 family trains unstably above ~1e-3 with AdamW (no 1/sqrt(d) in its attention).
# New tokens for a statement's answer: yes / no / maybe in the LMs' own tokenizers. "maybe" is rare in the
# tokenizers' corpus and can be 5 pieces ("▁m a y b e"); a cap of 3 cut it to "may" and scored every right
# "maybe" as wrong.
STATEMENT_TOKENS = 8
LR = {"vit": 2e-3, "flan_t5": 1e-3, "blip2": 2e-3, "mt0": 1e-3, "bloomz": 2e-3, "nllb": 2e-3}


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
            preds = predict([(i, templates.eval_prompt("xvnli", h[c])) for i, h, _ in hyps], STATEMENT_TOKENS)
            out["nli_acc"][c] = _accuracy(preds, [label for _, _, label in hyps])
            preds = predict([(ij, templates.eval_prompt("marvl", t[c])) for ij, t, _ in pairs], STATEMENT_TOKENS)
            out["pair_acc"][c] = _accuracy(preds, [label for _, _, label in pairs])
    out.update(qa_n=len(qas), caption_n=len(caps))
    if statements:
        out.update(nli_n=len(hyps), pair_n=len(pairs))
    return out


def _accuracy(preds: Sequence[str], gold: Sequence[str]) -> float:
    return round(float(np.mean([_norm(p) == _norm(g) for p, g in zip(preds, gold)])), 4)


def _scene_ids(tok, scenes: Sequence[Scene]) -> list[list[int]]:
    return _encode(tok, [scene_text(s) for s in scenes], add_special_tokens=False)
