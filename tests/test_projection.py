"""`projection: align` (`mblip.projection`): the least-squares map is exact where an exact map exists, the composed
projection equals BLIP-2's projection followed by it, token strings (not ids) pair the vocabularies, and a build on
tiny checkpoints reads BLIP-2's projection and its LLM's embeddings from the checkpoint."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedTokenizerFast

from mblip import projection as P
from mblip.model import build_mblip


def test_fit_recovers_an_exact_linear_map_and_the_composition_is_one_linear_layer():
    g = torch.Generator().manual_seed(0)
    old = torch.randn(50, 4, generator=g)
    a, c = torch.randn(4, 6, generator=g), torch.randn(6, generator=g)
    new = old @ a + c
    w, residual = P.fit(old, new, [(i, i) for i in range(50)])
    assert residual < 1e-10
    torch.testing.assert_close(w, torch.cat([a, c[None]]), atol=1e-4, rtol=1e-4)
    proj_w, proj_b = torch.randn(4, 3, generator=g), torch.randn(4, generator=g)  # BLIP-2's: 3 -> 4
    lin = P.aligned(proj_w, proj_b, w)
    x = torch.randn(5, 3, generator=g)
    torch.testing.assert_close(lin(x), (x @ proj_w.T + proj_b) @ a + c, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="more shared tokens than the old LLM's width \\(4\\).*share 4.*projection: new"):
        P.fit(old, new, [(i, i) for i in range(4)])


def _word_tokenizer(words):
    from tokenizers import Tokenizer, models, pre_tokenizers
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>")


def test_shared_tokens_pair_strings_not_ids_and_skip_special_tokens():
    old = _word_tokenizer(["<pad>", "<unk>", "red", "circle", "<image>", "left"])
    new = _word_tokenizer(["<unk>", "<pad>", "links", "left", "red", "rot", "<image>"])
    assert P.shared_tokens(old, new) == [(5, 3), (2, 4)]  # "left", "red" in string order


def test_build_with_align_maps_blip2s_llm_space_onto_the_new_llms(tiny, tmp_path):
    """A new LLM whose input embeddings are an exact affine image of the English LLM's (A, c): the built
    projection must be BLIP-2's projection followed by exactly that map."""
    from safetensors import safe_open
    g = torch.Generator().manual_seed(1)
    tensors = {}
    for f in sorted(tiny["blip2"].glob("*.safetensors")):
        with safe_open(str(f), "pt") as h:
            tensors.update({k: h.get_tensor(k) for k in h.keys()
                            if k in ("language_model.shared.weight", "language_projection.weight",
                                     "language_projection.bias")})
    old_emb = tensors["language_model.shared.weight"]
    llm = AutoModelForSeq2SeqLM.from_pretrained(tiny["mt5"])
    assert AutoTokenizer.from_pretrained(tiny["mt5"]).get_vocab() == AutoTokenizer.from_pretrained(tiny["blip2"]).get_vocab()
    a, c = torch.randn(old_emb.shape[1], llm.config.d_model, generator=g) * 0.3, torch.randn(llm.config.d_model, generator=g)
    with torch.no_grad():
        llm.get_input_embeddings().weight.copy_(old_emb @ a + c)
    llm.save_pretrained(tmp_path / "lin")
    AutoTokenizer.from_pretrained(tiny["mt5"]).save_pretrained(tmp_path / "lin")

    model = build_mblip(tiny["blip2"], tmp_path / "lin", projection="align", stage="warmup", lora_scope="none",
                        device="cpu")
    x = torch.randn(3, tensors["language_projection.weight"].shape[1], generator=g)
    want = (x @ tensors["language_projection.weight"].T + tensors["language_projection.bias"]) @ a + c
    torch.testing.assert_close(model.blip2.language_projection(x), want, atol=1e-3, rtol=1e-3)
    assert model.blip2.language_projection.weight.requires_grad  # the warm-up trains it from there
    # on the meta device (parameter counts) nothing is read and the shapes are a new projection's
    meta = build_mblip(tiny["blip2"], tmp_path / "lin", projection="align", device="meta")
    assert meta.blip2.language_projection.weight.shape == model.blip2.language_projection.weight.shape
