"""The graft (`mblip.model`) on tiny seq2seq (mT5) and causal (BLOOM) LLMs; the paper configs on the meta device."""

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import IMAGE_SIZE, NUM_QUERY, image_embeds, save_tokenizer

from mblip.model import (build_mblip, component, format_parameters_table, load_blip2_folder, load_mblip,
                         trainable_parameters_table)
from mblip.train import Collator

LLMS = ("mt5", "bloom")


def perturb(model, seed=1):
    """Random trainable weights (LoRA B starts at zero, which would hide a LoRA that is lost or ignored)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_state_dict().values():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)


def batch(model, n=2, num_images=1, generate=False, seed=0):
    examples = [{"prompt": "what colour is the shape?", "target": ["red", "blue", "green"][i % 3],
                 "image_embeds": image_embeds(1, num_images, seed=seed + i)[0]} for i in range(n)]
    return Collator.for_model(model, num_images=num_images, generate=generate)(examples)


def pixels(n=2, seed=0):
    return torch.randn((n, 3, IMAGE_SIZE, IMAGE_SIZE), generator=torch.Generator().manual_seed(seed))


def logits(model, b, **images):
    images = images or {k: b[k] for k in ("image_embeds", "pixel_values") if k in b}
    with torch.no_grad():
        return model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b.get("labels"),
                     **images).logits


# ----------------------------------------------------------------------------------------------- paper scale


def test_paper_configs_have_the_protocols_124m_trainable_parameters(tmp_path):
    """Protocol §3: ~124.4M (mT0-XL, reused projection) / ~124.0M (BLOOMZ-7B1, new 4096-wide projection)."""
    from transformers import (Blip2Config, Blip2QFormerConfig, Blip2VisionConfig, BloomConfig, MT5Config,
                              T5Config)

    flan_t5_xl = T5Config(d_model=2048, d_ff=5120, num_layers=24, num_heads=32, d_kv=64, vocab_size=32128,
                          feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    # HF defaults are BLIP-2's EVA ViT-g/14 (39 layers, 1408 wide, 224 px) and the BERT-base Q-Former
    Blip2Config(vision_config=Blip2VisionConfig(), qformer_config=Blip2QFormerConfig(), text_config=flan_t5_xl,
                num_query_tokens=32).save_pretrained(tmp_path / "blip2")
    MT5Config(d_model=2048, d_ff=5120, num_layers=24, num_decoder_layers=24, num_heads=32, d_kv=64,
              vocab_size=250112, feed_forward_proj="gated-gelu", tie_word_embeddings=False
              ).save_pretrained(tmp_path / "mt0")
    BloomConfig(hidden_size=4096, n_layer=30, n_head=32, vocab_size=250880).save_pretrained(tmp_path / "bloomz")
    save_tokenizer(tmp_path / "mt0", "unigram")
    save_tokenizer(tmp_path / "bloomz", "bpe")

    for llm, projection, expected, llm_total in (("mt0", "reuse", 124.4e6, 3.2e9), ("bloomz", "new", 124.0e6, 7.0e9)):
        model = build_mblip(tmp_path / "blip2", tmp_path / llm, projection=projection, device="meta")
        table = trainable_parameters_table(model)
        rows = {name: (trainable, total) for name, trainable, total in table}
        assert sum(t for t, _ in rows.values()) == pytest.approx(expected, rel=0.01), format_parameters_table(table)
        assert rows["vit"][0] == 0 and rows["vit"][1] == pytest.approx(0.99e9, rel=0.01)
        assert rows["llm(base)"][0] == 0 and rows["llm(base)"][1] == pytest.approx(llm_total, rel=0.02)
        assert rows["qformer"][0] == pytest.approx(105.1e6, rel=0.01)
        d_llm = model.config.text_config.hidden_size
        assert rows["projection"][0] == 768 * d_llm + d_llm
    assert "| total | 124.04 |" in format_parameters_table(table)


# ----------------------------------------------------------------------------------------------- forward


@pytest.mark.parametrize("llm", LLMS)
def test_forward_equals_transformers_blip2_on_the_same_weights(build_tiny, llm):
    model = build_tiny(llm).eval()
    perturb(model)
    b, pv = batch(model), pixels()
    ours = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"], pixel_values=pv)
    with torch.no_grad():
        theirs = model.blip2(pixel_values=pv, input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                             labels=b["labels"])
    assert torch.allclose(ours.logits, theirs.logits, atol=1e-6) and torch.allclose(ours.loss, theirs.loss)
    # cached ViT features give the same result as pixels
    cached = logits(model, b, image_embeds=model.encode_images(pv))
    assert torch.allclose(cached, theirs.logits, atol=1e-6)
    # and the images matter
    assert not torch.allclose(logits(model, b, pixel_values=pixels(seed=5)), theirs.logits)


@pytest.mark.parametrize("llm", LLMS)
def test_two_images_per_example_give_2n_visual_tokens_left_image_first(build_tiny, llm):
    model = build_tiny(llm).eval()
    b = batch(model, num_images=2)
    assert ((b["input_ids"] == model.image_token_index).sum(1) == 2 * NUM_QUERY).all()
    emb = b["image_embeds"]
    features = model.image_features(image_embeds=emb)
    assert features.shape[1] == 2 * NUM_QUERY
    assert torch.allclose(features[:, :NUM_QUERY], model.image_features(image_embeds=emb[:, 0]))
    assert torch.allclose(features[:, NUM_QUERY:], model.image_features(image_embeds=emb[:, 1]))
    swapped = logits(model, b, image_embeds=emb.flip(1))
    assert not torch.allclose(swapped, logits(model, b, image_embeds=emb))
    with pytest.raises(ValueError, match="<image> tokens per example"):
        logits(model, b, image_embeds=emb[:, 0])  # prompt built for 2 images, 1 given


@pytest.mark.parametrize("llm", LLMS)
def test_backward_reaches_exactly_the_trainable_parameters(build_tiny, llm):
    model = build_tiny(llm).train()
    b = batch(model)
    model(**b).loss.backward()
    names = {n: p for n, p in model.blip2.named_parameters()}
    with_grad = {n for n, p in names.items() if p.grad is not None}
    assert with_grad == {n for n, p in names.items() if p.requires_grad} == set(model.trainable_names())
    parts = {component(n) for n in with_grad}
    assert parts == {"qformer", "query_tokens", "projection", "llm(lora)"}
    assert all(n.startswith("language_model.") for n in with_grad if ".lora_" in n)
    assert not any(".lora_" in n for n in names if not n.startswith("language_model."))
    assert all(names[n].grad.abs().sum() > 0 for n in with_grad if "lora_B" in n)


@pytest.mark.parametrize("llm", LLMS)
def test_generate_returns_only_new_tokens_with_beam_search(build_tiny, llm):
    model = build_tiny(llm).eval()
    b = batch(model, n=3, generate=True)
    assert "labels" not in b
    out = model.generate(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                         image_embeds=b["image_embeds"], max_new_tokens=5, num_beams=2, min_new_tokens=1)
    assert out.shape[0] == 3 and 1 <= out.shape[1] <= 6  # seq2seq outputs start with the decoder start token
    assert (out != model.image_token_index).all()
    if model.decoder_only:  # prompts are left-padded so that all of them end where generation starts
        assert (b["attention_mask"][:, -1] == 1).all() and out.shape[1] <= 5
    texts = model.tokenizer.batch_decode(out, skip_special_tokens=True)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)


# ----------------------------------------------------------------------------------------------- LoRA, freezing


def test_lora_scopes_stay_inside_the_llm(build_tiny, tiny, tmp_path):
    def lora_leaves(model):
        return {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in model.blip2.named_parameters() if "lora_A" in n}

    assert lora_leaves(build_tiny("mt5")) == {"q", "k", "v", "o", "wi_0", "wi_1", "wo"}
    assert lora_leaves(build_tiny("mt5", lora_scope="qv")) == {"q", "v"}
    assert lora_leaves(build_tiny("bloom")) == {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"}
    assert lora_leaves(build_tiny("bloom", lora_scope="qv")) == {"query_key_value"}
    assert lora_leaves(build_tiny("mt5", lora_scope="none")) == set()
    # any other architecture: every Linear of the LLM except the output head
    from transformers import AutoModelForCausalLM, OPTConfig

    opt = tmp_path / "opt"
    tok = save_tokenizer(opt, "bpe")
    AutoModelForCausalLM.from_config(OPTConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                               ffn_dim=64, num_attention_heads=4, word_embed_proj_dim=32,
                                               pad_token_id=3, bos_token_id=1, eos_token_id=2)).save_pretrained(opt)
    model = build_mblip(tiny["blip2"], opt, device="cpu")
    assert lora_leaves(model) == {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}
    assert lora_leaves(build_mblip(tiny["blip2"], opt, lora_scope="qv", device="cpu")) == {"q_proj", "v_proj"}
    model(**batch(model)).loss.backward()  # and it trains


def test_stages_freeze_what_the_protocol_says(build_tiny):
    def trainable_parts(model):
        return {c for c, t, _ in trainable_parameters_table(model) if t}

    assert trainable_parts(build_tiny("mt5", stage="warmup", lora_scope="none")) == {"projection"}
    assert trainable_parts(build_tiny("mt5")) == {"qformer", "query_tokens", "projection", "llm(lora)"}
    assert trainable_parts(build_tiny("bloom", stage="finetune")) == {"qformer", "query_tokens", "projection",
                                                                      "llm(lora)"}
    assert trainable_parts(build_tiny("mt5", train_qformer=False)) == {"projection", "llm(lora)"}
    assert trainable_parts(build_tiny("mt5", stage="eval")) == set()


def test_scratch_qformer_is_random_and_bootstrap_is_the_checkpoint(build_tiny, tiny):
    from safetensors import safe_open

    index = json.loads((tiny["blip2"] / "model.safetensors.index.json").read_text())["weight_map"]
    key = "qformer.encoder.layer.0.attention.attention.query.weight"
    with safe_open(str(tiny["blip2"] / index[key]), "pt") as f:
        stored = f.get_tensor(key)
    with safe_open(str(tiny["blip2"] / index["query_tokens"]), "pt") as f:
        stored_queries = f.get_tensor("query_tokens")
    boot, scratch = build_tiny("mt5"), build_tiny("mt5", qformer_init="scratch")
    assert torch.equal(boot.blip2.state_dict()[key], stored)
    assert torch.equal(boot.blip2.query_tokens, stored_queries)
    assert not torch.allclose(scratch.blip2.state_dict()[key], stored)
    queries = scratch.blip2.query_tokens[0]
    assert queries.std() > 0 and not torch.allclose(queries[0], queries[1])  # not HF's all-zero init


def test_only_vision_and_qformer_tensors_are_read(build_tiny, tiny, tmp_path):
    """Shards that hold only the English LLM may be absent: they are never opened."""
    folder = tmp_path / "blip2"
    shutil.copytree(tiny["blip2"], folder)
    index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    shards = {}
    for key, shard in index.items():
        shards.setdefault(shard, set()).add(key.startswith("language_model."))
    llm_only = [s for s, kinds in shards.items() if kinds == {True}]
    assert llm_only, "the tiny checkpoint should have LLM-only shards"
    for shard in llm_only:
        (folder / shard).unlink()
    a, b = build_tiny("mt5"), build_mblip(folder, tiny["mt5"], lora_dropout=0.0, device="cpu")
    batch_ = batch(a)
    assert torch.equal(logits(a.eval(), batch_), logits(b.eval(), batch_))


# ----------------------------------------------------------------------------------------------- saving


@pytest.mark.parametrize("llm", LLMS)
def test_save_trainable_then_load_gives_equal_logits(build_tiny, llm, tmp_path):
    from safetensors.torch import load_file

    model = build_tiny(llm).eval()
    perturb(model)
    model.save_trainable(tmp_path / "ckpt")
    saved = load_file(str(tmp_path / "ckpt" / "trainable.safetensors"))
    assert set(saved) == set(model.trainable_names())
    assert "query_tokens" in saved and any(".lora_B" in k for k in saved)
    assert any(k.startswith("qformer.") for k in saved)
    b = batch(model)
    expected = logits(model, b)
    fresh = build_tiny(llm, seed=7).eval()  # other random projection/LoRA init before loading
    assert not torch.allclose(logits(fresh, b), expected)
    fresh.load_trainable(tmp_path / "ckpt")
    assert torch.equal(logits(fresh, b), expected)
    rebuilt = load_mblip(tmp_path / "ckpt").eval()  # rebuilt from build.json alone
    assert torch.equal(logits(rebuilt, b), expected)
    with pytest.raises(ValueError, match="does not match this model"):
        build_tiny(llm, lora_scope="qv").load_trainable(tmp_path / "ckpt")


@pytest.mark.parametrize("llm", LLMS)
def test_export_loads_in_plain_transformers_with_equal_logits(build_tiny, llm, tmp_path):
    from PIL import Image
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    model = build_tiny(llm).eval()
    perturb(model)
    model.export(tmp_path / "hf")
    hf = Blip2ForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    processor = Blip2Processor.from_pretrained(tmp_path / "hf")
    image = Image.new("RGB", (40, 40), (200, 30, 30))
    prompt = "what colour is the shape?"
    inputs = processor(images=[image], text=[prompt], return_tensors="pt")
    ours = Collator.for_model(model, generate=True)([{"prompt": prompt, "image": image}])
    mask = ours["attention_mask"].bool()
    assert inputs["input_ids"][0].tolist() == ours["input_ids"][mask].tolist()  # same prompt layout as HF's
    assert torch.allclose(inputs["pixel_values"], ours["pixel_values"])
    labels = None if model.decoder_only else model.tokenizer(["red"], return_tensors="pt").input_ids
    with torch.no_grad():
        theirs = hf(**inputs, labels=labels).logits
    mine = logits(model, {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"],
                          "labels": labels}, pixel_values=inputs["pixel_values"])
    assert torch.allclose(mine, theirs, rtol=1e-4, atol=1e-4)  # merged LoRA: (W + BA)x vs Wx + BAx rounding
    assert any(".lora_" in n for n, _ in model.blip2.named_parameters())  # export left our model as it was


def test_merge_lora_keeps_the_function_and_removes_the_adapters(build_tiny):
    model = build_tiny("mt5").eval()
    perturb(model)
    b = batch(model)
    before = logits(model, b)
    model.merge_lora()
    assert not any(".lora_" in n for n, _ in model.blip2.named_parameters())
    assert torch.allclose(logits(model, b), before, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="export"):
        model.save_trainable("unused")
    with pytest.raises(ValueError, match="no LoRA to merge"):
        model.merge_lora()


def test_released_mblip_format_loads_for_eval_and_finetune(tiny, tmp_path):
    """A tiny model in the format of Gregor/mblip-mt0-xl: no image_token_index, no <image> token, no preprocessor."""
    from conftest import blip2_config, mt5_config
    from transformers import Blip2ForConditionalGeneration

    folder = tmp_path / "released"
    tok = save_tokenizer(folder, "unigram")
    torch.manual_seed(0)
    Blip2ForConditionalGeneration(blip2_config(mt5_config(len(tok)))).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["mBLIP"]
    config.pop("image_token_index", None)
    (folder / "config.json").write_text(json.dumps(config))
    assert "<image>" not in tok.get_vocab()

    model = load_blip2_folder(folder, device="cpu").eval()
    assert model.tokenizer.convert_tokens_to_ids("<image>") == model.image_token_index == len(tok)
    assert all(t == 0 for _, t, _ in trainable_parameters_table(model))
    b = batch(model, generate=True)
    out = model.generate(**b, max_new_tokens=3)
    assert out.shape[0] == 2
    finetune = load_blip2_folder(folder, stage="finetune", lora_scope="all", device="cpu")
    parts = {c for c, t, _ in trainable_parameters_table(finetune) if t}
    assert parts == {"qformer", "query_tokens", "projection", "llm(lora)"}
    perturb(finetune)
    finetune.save_trainable(tmp_path / "ft")
    assert torch.equal(logits(load_mblip(tmp_path / "ft").eval(), batch(finetune)),
                       logits(finetune.eval(), batch(finetune)))
    # a folder missing weights is refused rather than silently completed with random ones
    from safetensors.torch import load_file, save_file

    weights = load_file(str(folder / "model.safetensors"))
    weights.pop("qformer.layernorm.weight")
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"lacks 1 weights .*qformer.layernorm.weight"):
        load_blip2_folder(folder, device="cpu")


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("overrides, message", [
    ({"lora_rank": 0}, r"lora_rank must be a positive integer, got 0"),
    ({"lora_scope": "everything"}, r"lora_scope must be one of .* got 'everything'"),
    ({"lora_alpha": -1}, r"lora_alpha must be a positive number, got -1"),
    ({"stage": "pretrain"}, r"stage must be one of .* got 'pretrain'"),
    ({"stage": "warmup"}, r"stage='warmup' trains the projection only, so lora_scope must be 'none'"),
    ({"qformer_init": "random"}, r"qformer_init must be one of .* got 'random'"),
    ({"quantization": "3bit"}, r"quantization must be one of .* got '3bit'"),
    ({"projection": "reuse"}, r"projection='reuse' needs the BLIP-2 projection \(32->32\) to fit the LLM's hidden "
                              r"size 48; use projection='new'"),
])
def test_bad_arguments_name_the_argument_and_the_fix(build_tiny, overrides, message):
    with pytest.raises(ValueError, match=message):
        build_tiny("bloom", **overrides)


def test_wrong_checkpoints_and_dtypes_are_rejected(tiny):
    with pytest.raises(ValueError, match=r"blip2=.* is a 'mt5' checkpoint, not BLIP-2"):
        build_mblip(tiny["mt5"], tiny["mt5"], device="cpu")
    with pytest.raises(ValueError, match=r"llm=.* is a whole BLIP-2/mBLIP model, not an LLM; .*load_blip2_folder"):
        build_mblip(tiny["blip2"], tiny["blip2"], device="cpu")
    with pytest.raises(ValueError, match=r"dtype must be a torch dtype or its name .* got 'fp32'"):
        build_mblip(tiny["blip2"], tiny["mt5"], dtype="fp32", device="cpu")


def test_quantization_without_gpu_says_so_once_and_loads_unquantised(build_tiny, caplog):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with caplog.at_level(logging.WARNING, logger="mblip.model"):
        model = build_tiny("mt5", quantization="8bit")
    notes = [r for r in caplog.records if "quantization" in r.getMessage()]
    assert len(notes) == 1 and "'8bit'" in notes[0].getMessage() and "\n" not in notes[0].getMessage()
    assert not model.quantized


def test_quantisation_configs_follow_the_protocol():
    """What a GPU run would get (built here without a GPU): int8 / NF4 with bf16 compute, T5's `wo` and the head
    kept in full precision."""
    from mblip.model import _quant_config

    q8 = _quant_config("8bit", "mt5", "cuda:0")
    assert q8.load_in_8bit and set(q8.llm_int8_skip_modules) == {"lm_head", "wo"}
    q4 = _quant_config("4bit", "bloom", "cuda:0", extra_skip=("vision_model",))
    assert q4.load_in_4bit and q4.bnb_4bit_quant_type == "nf4" and q4.bnb_4bit_compute_dtype == torch.bfloat16
    assert set(q4.llm_int8_skip_modules) == {"lm_head", "vision_model"} and not q4.bnb_4bit_use_double_quant
    assert _quant_config("none", "mt5", "cuda:0") is None and _quant_config("8bit", "mt5", "meta") is None


def test_the_tiny_tokenizers_are_the_same_in_every_process(tmp_path):
    """The tiny models of these tests are only reproducible if their tokenizers are: the Unigram trainer's scores
    differ between processes in the last bits, so `save_tokenizer` puts the pieces in canonical order."""
    tests = Path(__file__).parent
    for k in range(2):
        code = f"import conftest; conftest.save_tokenizer({str(tmp_path / str(k))!r}, 'unigram')"
        subprocess.run([sys.executable, "-c", code], cwd=tests, check=True, capture_output=True)
    assert (tmp_path / "0" / "tokenizer.json").read_bytes() == (tmp_path / "1" / "tokenizer.json").read_bytes()
