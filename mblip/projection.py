"""A new projection that starts where BLIP-2's pointed: `models.projection: align`.

BLIP-2's projection maps the Q-Former's output into the input-embedding space of the English LLM it was trained
with (Flan-T5 in the paper, the "Flan-T5" stand-in in the demo). The multilingual LLM has its own embedding space,
so the authors either reuse that projection (when the widths match, mT0-XL) or start a fresh one (BLOOMZ). `align`
starts from BLIP-2's projection followed by a linear map from the English LLM's input embeddings to the new LLM's,
fitted by least squares over the token strings both vocabularies hold (the demo's share 256; the paper models'
overlap was not measured here). It reads only the two checkpoints' weights and tokenizers: no image, caption or
training step. The warm-up and the re-alignment then train the projection as they would a fresh one. This is our
addition, not the paper's.

    W = argmin ||[E_blip2_llm[t], 1] W - E_llm[t]||²  over shared tokens t
    projection(x) = [P x + p, 1] W                    (P, p: BLIP-2's projection)

What it does on the demo is measured in the README ("The projection").
"""
from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger("mblip")


def embedding_keys(text_config) -> list[str]:
    """Checkpoint keys under which a BLIP-2 checkpoint may hold its LLM's input embeddings (tied names included)."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM
    auto = AutoModelForSeq2SeqLM if text_config.is_encoder_decoder else AutoModelForCausalLM
    with torch.device("meta"):
        lm = auto.from_config(text_config)
    weight = lm.get_input_embeddings().weight
    return ["language_model." + n for n, p in lm.named_parameters(remove_duplicate=False) if p is weight]


def shared_tokens(old_tok, new_tok) -> list[tuple[int, int]]:
    """(old id, new id) of every token string both vocabularies hold, special tokens and <image> left out."""
    skip = set(old_tok.all_special_tokens) | set(new_tok.all_special_tokens) | {"<image>"}
    old, new = old_tok.get_vocab(), new_tok.get_vocab()
    return [(old[t], new[t]) for t in sorted(set(old) & set(new) - skip)]


def fit(old_emb: torch.Tensor, new_emb: torch.Tensor, pairs: list[tuple[int, int]]) -> tuple[torch.Tensor, float]:
    """Least-squares W ((d_old + 1) x d_new, last row the bias) with [old_emb[i], 1] W ≈ new_emb[j] over `pairs`;
    returns W and the relative residual (mean squared error / mean square of the targets)."""
    d_old = old_emb.shape[1]
    if len(pairs) <= d_old:
        raise ValueError(f"projection='align' needs more shared tokens than the old LLM's width ({d_old}) to fit a map; "
                         f"the two tokenizers share {len(pairs)}. Use models.projection: new")
    a = old_emb[[i for i, _ in pairs]].float()
    b = new_emb[[j for _, j in pairs]].float()
    a = torch.cat([a, torch.ones(len(a), 1)], 1)
    w = torch.linalg.lstsq(a, b).solution
    return w, ((a @ w - b).pow(2).mean() / b.pow(2).mean()).item()


def aligned(proj_weight: torch.Tensor, proj_bias: torch.Tensor, w: torch.Tensor) -> nn.Linear:
    """BLIP-2's projection (weight (d_old, d_q), bias (d_old,)) followed by the fitted map: one nn.Linear."""
    weight, bias = proj_weight.float(), proj_bias.float()
    out = nn.Linear(weight.shape[1], w.shape[1], device=weight.device)
    with torch.no_grad():
        out.weight.copy_((weight.T @ w[:-1]).T)
        out.bias.copy_(bias @ w[:-1] + w[-1])
    return out


def align_projection(tensors: dict[str, torch.Tensor], keys: list[str], old_tok, new_tok,
                     new_emb: torch.Tensor) -> nn.Linear:
    """The `align` projection from BLIP-2's checkpoint tensors (its projection and LLM embeddings under one of
    `keys`), the two tokenizers and the new LLM's input embeddings."""
    key = next((k for k in keys if k in tensors), None)
    if key is None:
        raise ValueError(f"projection='align' needs the BLIP-2 checkpoint's LLM input embeddings (one of {keys}); "
                         "this checkpoint has none. Use models.projection: new")
    pairs = shared_tokens(old_tok, new_tok)
    w, residual = fit(tensors[key], new_emb.detach().cpu(), pairs)
    log.info("projection: aligned through %d shared tokens (relative residual %.3f)", len(pairs), residual)
    return aligned(tensors["language_projection.weight"], tensors["language_projection.bias"], w)
