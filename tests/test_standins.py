"""The demo's pretrained stand-ins: saved folders load through the real `from_pretrained` path, tokenizers give
the world's text back in every language, the translator is used the NLLB way, and short trainings learn."""

import pytest
import torch

from mblip import languages, templates
from mblip.demo import standins
from mblip.demo.realise import LANGUAGES, NP, QExist, realise, sample_meanings
from mblip.demo.world import Obj, Scene, make_scenes, render

# Shrunken sizes: the whole pipeline of stand-ins in seconds.
TINY = dict(n_train=150, n_val=20, seed=3, vit_steps=40, lm_steps=150, blip2_steps=20, mt0_steps=150,
            bloomz_steps=100, nllb_steps=80, batch_size=16, vit_hidden=32, d_model=32, nllb_d_model=32, multi_vocab=1500,
            tokenizer_corpus=1500, n_eval=4, lr_scale=4.0, nli_share=0.15, pair_share=0.1, match_heads=True,
            aligned_words=True)


@pytest.fixture(scope="module")
def standin_dir(tmp_path_factory):
    torch.set_num_threads(1)  # tiny models: a second thread only adds sync overhead on a shared machine
    out = tmp_path_factory.mktemp("standins")
    metrics = standins.train_all(out, workers=2, **TINY)  # the two chains in two processes, as in the demo
    return out, metrics


def world_sentences() -> dict[str, list[str]]:
    """Every meaning type realised in every demo language, plus the protocol's prompts."""
    out = {lang: [realise(m, lang) for m in sample_meanings()] for lang in LANGUAGES}
    out["en"] += standins.caption_prompts("en") + standins.vqa_prompts("How many circles are there?", "ja")
    return out


def test_scene_text_is_the_fixed_format():
    scene = Scene("s", "train", (Obj("square", "blue", "small", "right"), Obj("circle", "red", "large", "left")))
    assert standins.scene_text(scene) == "scene: left large red circle | right small blue square"


def test_prompts_include_the_eval_prompts():
    for code in ("en", "de", "zh", "sw"):
        assert templates.eval_prompt("xm3600", code) in standins.caption_prompts(code)
    assert templates.eval_prompt("xgqa", "Wo ist der Kreis?") in standins.vqa_prompts("Wo ist der Kreis?", "en")
    assert "Wo ist der Kreis? Short German answer:" in standins.vqa_prompts("Wo ist der Kreis?", "de")


def test_every_folder_loads_like_a_hub_id(standin_dir):
    from transformers import (AutoConfig, AutoImageProcessor, AutoModelForCausalLM, AutoModelForSeq2SeqLM,
                              AutoTokenizer, Blip2ForConditionalGeneration, Blip2Processor, Blip2VisionModel)

    out, _ = standin_dir
    kinds = {"flan-t5": ("t5", AutoModelForSeq2SeqLM), "mt0": ("mt5", AutoModelForSeq2SeqLM),
             "nllb": ("m2m_100", AutoModelForSeq2SeqLM), "bloomz": ("bloom", AutoModelForCausalLM)}
    for folder, (model_type, auto) in kinds.items():
        path = str(out / folder)
        assert AutoConfig.from_pretrained(path).model_type == model_type
        model, tok = auto.from_pretrained(path), AutoTokenizer.from_pretrained(path)
        assert model.get_input_embeddings().weight.shape[0] == len(tok), folder

    vit = Blip2VisionModel.from_pretrained(str(out / "vit"))
    assert vit.config.image_size == 64 and vit.config.patch_size == 8
    assert AutoImageProcessor.from_pretrained(str(out / "vit")).size == {"height": 64, "width": 64}

    # the English BLIP-2: processor puts the <image> tokens in, the model captions a rendered scene
    path = str(out / "blip2-en")
    blip2 = Blip2ForConditionalGeneration.from_pretrained(path)
    processor = Blip2Processor.from_pretrained(path)
    image = render(make_scenes(1, "test", 0)[0], 64, 0)
    inputs = processor(images=image, text="Caption in English: ", return_tensors="pt")
    n_image = (inputs["input_ids"] == blip2.config.image_token_index).sum().item()
    assert n_image == blip2.config.num_query_tokens
    assert processor.tokenizer.convert_ids_to_tokens(blip2.config.image_token_index) == "<image>"
    ids = blip2.generate(**inputs, max_new_tokens=5)
    assert isinstance(processor.batch_decode(ids, skip_special_tokens=True)[0], str)
    # its vision tower is the pretrained ViT, unchanged
    for name, p in vit.state_dict().items():
        assert torch.equal(p, blip2.vision_model.state_dict()[name]), name


def test_blip2_cached_feature_path_equals_the_pixel_path(standin_dir):
    from transformers import AutoTokenizer, Blip2ForConditionalGeneration

    out, _ = standin_dir
    blip2 = Blip2ForConditionalGeneration.from_pretrained(str(out / "blip2-en")).eval()
    tok = AutoTokenizer.from_pretrained(str(out / "blip2-en"))
    scenes = make_scenes(3, "val", 1)
    x = standins.pixels(scenes, 64, 1)
    batch = standins.Seq2SeqBatcher(tok, tok.pad_token_id)(
        [[blip2.config.image_token_index] * blip2.config.num_query_tokens] * 3, ["Caption the image."] * 3,
        ["A red circle.", "Two squares.", "A blue triangle."])
    with torch.no_grad():
        queries = standins.vision._query_features(blip2, standins.vision_features(blip2.vision_model, x))
        cached = standins.vision._blip2_forward(blip2, queries, batch).loss
        direct = blip2(pixel_values=x, **batch).loss
    assert torch.allclose(cached, direct, atol=1e-5)


@pytest.mark.parametrize("folder", ["mt0", "bloomz", "nllb"])
def test_multilingual_tokenizers_round_trip_every_language(standin_dir, folder):
    from transformers import AutoTokenizer

    out, _ = standin_dir
    tok = AutoTokenizer.from_pretrained(str(out / folder))
    for lang, texts in world_sentences().items():
        for text in texts:
            ids = tok(text, add_special_tokens=False)["input_ids"]
            assert tok.unk_token_id not in ids, (lang, text)
            assert tok.decode(ids) == text, (lang, text)
    # no spaces in zh / ja: the pieces still cover the text (not one <unk> per sentence)
    zh = realise(sample_meanings()[10], "zh")
    assert " " not in zh and len(tok(zh, add_special_tokens=False)["input_ids"]) >= 2


def test_english_tokenizer_round_trips_english_and_has_image_token(standin_dir):
    from transformers import AutoTokenizer

    out, _ = standin_dir
    tok = AutoTokenizer.from_pretrained(str(out / "flan-t5"))
    for text in world_sentences()["en"]:
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert tok("a red circle")["input_ids"][-1] == tok.eos_token_id == 1  # T5: appends </s>
    assert tok.convert_tokens_to_ids("<image>") == 3 and tok.pad_token_id == 0


def test_nllb_is_used_the_nllb_way(standin_dir):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    out, _ = standin_dir
    path = str(out / "nllb")
    tok = AutoTokenizer.from_pretrained(path, src_lang="eng_Latn")
    model = AutoModelForSeq2SeqLM.from_pretrained(path)
    codes = [languages.get(c).nllb for c in LANGUAGES]
    assert all(tok.convert_tokens_to_ids(c) != tok.unk_token_id for c in codes)
    enc = tok(["A red circle on the left."], return_tensors="pt")
    # reloaded from disk it still has its trained pieces (a non-BPE model would come back as single characters)
    pieces = tok.convert_ids_to_tokens(enc["input_ids"][0])
    assert "▁red" in pieces and len(pieces) < 12, pieces
    assert enc["input_ids"][0, 0] == tok.convert_tokens_to_ids("eng_Latn")  # source = [src_lang] ... </s>
    assert enc["input_ids"][0, -1] == tok.eos_token_id
    for code in ("deu_Latn", "zho_Hant", "arb_Arab"):
        forced = tok.convert_tokens_to_ids(code)
        ids = model.generate(**enc, forced_bos_token_id=forced, max_new_tokens=6)
        assert ids[0, 0] == model.config.decoder_start_token_id == tok.eos_token_id
        assert ids[0, 1] == forced


def test_metrics_are_reported_for_every_stand_in(standin_dir):
    out, metrics = standin_dir
    assert set(metrics) >= {"vit", "flan_t5", "blip2", "mt0", "bloomz", "nllb", "seconds_total"}
    assert set(metrics["vit"]) >= {"shape", "colour", "size"}
    for name in ("mt0", "bloomz"):
        assert set(metrics[name]["qa_em"]) == set(LANGUAGES)
        # with statements in the multilingual LMs' instruction data, their ceilings are scored
        assert set(metrics[name]["nli_acc"]) == set(metrics[name]["pair_acc"]) == set(LANGUAGES)
        assert metrics[name]["nli_n"] == 3 * TINY["n_eval"] and metrics[name]["pair_n"] == TINY["n_eval"]
    targets = set(LANGUAGES) - {"en"}
    assert set(metrics["nllb"]["sentence_acc"]) == targets | {f"{c}_to_en" for c in targets}
    assert set(metrics["nllb"]["question_acc"]) == targets and 0 < metrics["nllb"]["n_questions"] <= 50
    assert (out / "metrics.json").exists()


def test_text_lms_learn(standin_dir):
    _, metrics = standin_dir
    for name in ("flan_t5", "mt0", "bloomz", "nllb"):
        m = metrics[name]
        # a drop of 2 nats = perplexity / 7.4, in a few seconds of training
        assert m["loss_last"] < m["loss_first"] - 2.0, (name, m)


def test_the_ceiling_gives_each_lm_the_input_it_was_trained_on(standin_dir):
    """`mblip.ceiling` asks the stand-in LMs through the evaluator's interface (image paths + prompts); with greedy
    decoding it must answer exactly as the stand-ins' own text-only predictors, one scene or a pair of scenes."""
    from pathlib import Path

    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    from mblip import ceiling
    from mblip.demo import annotate
    from mblip.demo.standins.common import _generate, _pad, _scene_ids
    from mblip.demo.standins.lms import _bloom_prompts, _seq2seq_predictor
    from mblip.demo.standins.text import _questions, scene_prefix
    from mblip.evaluate import Decoding

    out, _ = standin_dir
    scenes = make_scenes(TINY["n_val"], "val", TINY["seed"])[:6]
    descriptions = {s.id: standins.scene_text(s) for s in scenes}
    qas = _questions(scenes, TINY["seed"], ["en", "de"], make=annotate.gqa)[:10]
    items = [(i, templates.eval_prompt("xgqa", qa[c][0])) for i, qa in qas for c in ("en", "de")]
    items += [((0, 1), templates.eval_prompt("marvl", "Both images contain a circle.")),
              ((2, 3), "Caption in German: ")]
    images = [[Path(f"images/{scenes[j].id}.png") for j in ((i,) if isinstance(i, int) else i)] for i, _ in items]
    prompts = [t for _, t in items]
    greedy = Decoding(num_beams=1, max_new_tokens=6, min_new_tokens=0, length_penalty=1.0)

    model, tok = AutoModelForSeq2SeqLM.from_pretrained(out / "mt0"), AutoTokenizer.from_pretrained(out / "mt0")
    theirs = _seq2seq_predictor(model, tok, _scene_ids(tok, scenes), batch_size=7)(items, 6)
    ours = ceiling.text_generate(model, tok, descriptions, batch_size=5)(images, prompts, greedy)
    assert ours == theirs and len(set(ours)) > 3, ours  # not one constant answer

    model, tok = AutoModelForCausalLM.from_pretrained(out / "bloomz"), AutoTokenizer.from_pretrained(out / "bloomz")
    ids = _scene_ids(tok, scenes)
    seqs = _bloom_prompts(tok, [scene_prefix(ids, i) for i, _ in items], prompts)
    batch = {"input_ids": _pad(seqs, tok.pad_token_id, left=True),
             "attention_mask": _pad([[1] * len(q) for q in seqs], 0, left=True)}
    theirs = _generate(model, [batch], tok, 6, decoder_only=True, pad_token_id=tok.pad_token_id)
    assert ceiling.text_generate(model, tok, descriptions, batch_size=5)(images, prompts, greedy) == theirs
    with pytest.raises(KeyError, match=r"images/nowhere\.png: no scene description for 'nowhere'"):
        ceiling.text_generate(model, tok, descriptions)([[Path("images/nowhere.png")]], ["Caption in English: "],
                                                         greedy)


def test_a_right_statement_answer_scores_as_right():
    """The stand-ins' statement metrics must not cut answers short: "maybe" can be 5 pieces in their tokenizers
    ("▁m a y b e"), and a 3-token cap once scored every right "maybe" as wrong (held-out NLI 0.47 instead of 0.81)."""
    from mblip.demo.standins.common import _text_lm_metrics
    from mblip.demo.standins.text import _hypotheses, _statements

    scenes = make_scenes(6, "val", 0)
    gold = {templates.eval_prompt("xvnli", h["en"]): label for _, h, label in _hypotheses(scenes, 0, ["en"])}
    gold |= {templates.eval_prompt("marvl", t["en"]): label for _, t, label in _statements(scenes, 0, ["en"])}
    assert "maybe" in gold.values()

    def predict(items, max_new_tokens):  # right every time, one token per character
        return [gold.get(text, "")[:max_new_tokens] for _, text in items]

    m = _text_lm_metrics(predict, scenes, 0, ["en"], 6, statements=True)
    assert m["nli_acc"]["en"] == 1.0 and m["pair_acc"]["en"] == 1.0


def test_vision_encoder_learns_attributes(tmp_path):
    torch.set_num_threads(1)  # tiny models: a second thread only adds sync overhead on a shared machine
    train, val = make_scenes(300, "train", 0), make_scenes(60, "val", 0)
    x, xv = standins.pixels(train, 64, 0), standins.pixels(val, 64, 0)
    m = standins.train_vision(tmp_path, x, standins.attribute_labels(train, 8), xv,
                              standins.attribute_labels(val, 8)[0], hidden_size=32, num_layers=2, steps=120,
                              batch_size=32, lr=3e-3, seed=0)
    # chance: colour 0.2, size 0.5 (occupied columns)
    assert m["colour"] > 0.6 and m["size"] > 0.65, m


def test_text_target_loss_by_hand():
    emb = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [0.0, 3.0]])  # mean square (0 + 2 + 4 + 9) / 8
    queries = torch.tensor([[[1.0, 1.0], [0.0, 0.0], [5.0, 5.0]],  # scene [1, 2]: query 3 is free
                            [[0.0, 1.0], [9.0, 9.0], [9.0, 9.0]]])  # scene [3, 1, 2, 2]: cut to 3 queries
    loss = standins.text_target_loss(queries, [[1, 2], [3, 1, 2, 2]], emb)
    # squared distances / 2 dims: 0, (4 + 0) / 2, then (0 + 4) / 2, (64 + 64) / 2, (49 + 81) / 2;
    # mean over the 5 used queries, / (15 / 8)
    assert loss.item() == pytest.approx((0 + 2 + 2 + 64 + 65) / 5 / (15 / 8))


def test_text_target_puts_the_scene_description_into_the_lm_s_input_space(standin_dir, tmp_path):
    from transformers import AutoTokenizer, Blip2ForConditionalGeneration

    out, _ = standin_dir
    torch.set_num_threads(1)
    train, val = make_scenes(150, "train", 3), make_scenes(20, "val", 3)
    x, xv = standins.pixels(train, 64, 3), standins.pixels(val, 64, 3)
    texts = standins.WorldText(train, 3, ["en"])
    held_out = {}
    for weight in (0.0, 1.0):
        folder = tmp_path / str(weight)
        standins.train_blip2_english(folder, out / "vit", out / "flan-t5", texts, val, x, xv, num_query_tokens=24,
                                     steps=150, batch_size=16, lr=8e-3, n_eval=2, text_target=weight, seed=0)
        blip2 = Blip2ForConditionalGeneration.from_pretrained(str(folder)).eval()
        assert blip2.config.num_query_tokens == 24
        tok = AutoTokenizer.from_pretrained(str(folder))
        with torch.no_grad():
            queries = standins.vision._query_features(blip2, standins.vision_features(blip2.vision_model, xv))
            held_out[weight] = standins.text_target_loss(queries, standins.common._scene_ids(tok, val),
                                                         blip2.language_model.get_input_embeddings().weight).item()
    # on held-out images the queries come to stand for the description's tokens; the LM loss alone does not do that
    assert held_out[1.0] < 0.5 * held_out[0.0], held_out


def test_training_is_deterministic(tmp_path):
    scenes = make_scenes(40, "train", 0)
    texts = standins.WorldText(scenes, 0, ["en"])
    runs = []
    for k in range(2):
        standins.train_english_lm(tmp_path / str(k), texts, scenes[:2], d_model=32, steps=5, batch_size=8,
                                  n_eval=1, seed=7)
        runs.append([(tmp_path / str(k) / f).read_bytes() for f in ("model.safetensors", "tokenizer.json")])
    assert runs[0] == runs[1]


def test_unpicked_characters_get_the_same_ids_whatever_order_the_trainer_left_them_in():
    """The Unigram trainer appends characters it did not pick with made-up scores (lowest - 1e-4, - 2e-4, ...) in
    hash order, which changes between processes; the canonical vocabulary must not depend on that order."""
    from tokenizers import Tokenizer, models

    real = [("▁red", -3.0), ("▁circle", -3.5), ("ro", -6.25), ("x", -7.0)]
    lowest = -7.4  # the lowest piece the trainer kept (a marked word, dropped)
    vocabs = []
    for order in (["д", "个", "ق"], ["ق", "д", "个"]):
        made_up = [(ch, round(lowest - 1e-4 * (k + 1), 6)) for k, ch in enumerate(order)]
        made_up.append(("qué", made_up[-1][1]))  # as seen in the demo: a longer piece at the last made-up score
        tok = Tokenizer(models.Unigram([("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + real + made_up, unk_id=2))
        vocabs.append(standins.text._respecial(tok, ["<pad>", "</s>", "<unk>"]).get_vocab())
    assert vocabs[0] == vocabs[1]
    ids = vocabs[0]
    # the real pieces keep their order, above the made-up run, which is sorted by text
    assert ids["▁red"] < ids["▁circle"] < ids["ro"] < ids["x"] < min(ids[c] for c in ("д", "个", "ق", "qué"))
    assert sorted(("д", "个", "ق", "qué"), key=ids.get) == sorted(("д", "个", "ق", "qué"))


def test_workers_change_the_time_not_the_weights(tmp_path):
    """One stand-in of each chain, in one process and in two: byte-identical weights and tokenizers."""
    small = {**TINY, "nli_share": 0.0, "pair_share": 0.0, "match_heads": False, "aligned_words": False}
    files = []
    for workers in (1, 2):
        out = tmp_path / str(workers)
        m = standins.train_all(out, only=["vit", "bloomz"], workers=workers, **small)
        assert m["workers"] == workers and {"vit", "bloomz"} <= set(m)
        files.append({str(f.relative_to(out)): f.read_bytes() for f in sorted(out.rglob("*"))
                      if f.suffix in (".safetensors", ".json") and f.name != "metrics.json"})
    assert files[0].keys() == files[1].keys() and "vit/model.safetensors" in files[0]
    assert files[0] == files[1]


def test_bad_arguments_say_what_to_fix(tmp_path):
    with pytest.raises(ValueError, match="start with 'en'"):
        standins.train_all(tmp_path, langs=["de", "en"])
    with pytest.raises(ValueError, match="unknown stand-ins"):
        standins.train_all(tmp_path, only=["clip"])
    with pytest.raises(ValueError, match="workers must be >= 1"):
        standins.train_all(tmp_path, workers=0)
    texts = standins.WorldText(make_scenes(3, "train", 0), 0, ["en"])
    with pytest.raises(ValueError, match="not in \\['de'\\]"):
        standins.TaskSampler(texts, ["en", "de"])


def test_local_heads_start_on_their_neighbour():
    """Each of the first encoder heads of a fresh T5 stand-in puts most of its attention on its own offset."""
    from transformers import MT5Config, MT5ForConditionalGeneration

    torch.manual_seed(0)
    cfg = MT5Config(vocab_size=50, d_model=32, d_kv=4, d_ff=64, num_layers=2, num_decoder_layers=1,
                    num_heads=standins.T5_HEADS, dropout_rate=0.0, decoder_start_token_id=0)
    cfg._attn_implementation = "eager"  # attention weights are only returned by the eager path
    model = MT5ForConditionalGeneration(cfg)
    standins.priors._local_heads(model)
    ids = torch.randint(3, 50, (1, 12))
    attn = model.get_encoder()(input_ids=ids, output_attentions=True).attentions[0][0]  # (heads, query, key)
    q = torch.arange(4, 8)  # queries with neighbours 3 tokens away on both sides
    for head, offset in enumerate(standins.LOCAL_OFFSETS):
        on_target = attn[head, q, q + offset]
        assert (on_target > 0.5).all(), (head, offset, on_target)
    # the remaining heads start position-blind (the biases stay trainable)
    assert model.get_encoder().block[0].layer[0].SelfAttention.relative_attention_bias.weight.requires_grad
    assert attn[-1].max() < 0.5


def test_lm_text_scenes_extend_the_image_scenes_within_the_train_split():
    """The LMs read more scenes than the images show, never a held-out one: the text world's first n_train scenes
    are the image scenes, and every scene graph is owned by the train split."""
    from mblip.demo.world import split_of

    images, text = make_scenes(50, "train", 3), make_scenes(150, "train", 3)
    assert text[:50] == images
    assert {split_of(s.key()) for s in text} == {"train"}
    held_out = {s.key() for s in make_scenes(200, "val", 3) + make_scenes(200, "test", 3)}
    assert not held_out & {s.key() for s in text}


def test_match_heads_start_on_the_other_occurrence_of_their_token():
    """A fresh T5 stand-in's match heads put most of a repeated token's attention on its other occurrence, not on
    itself; every encoder layer has them."""
    from transformers import MT5Config, MT5ForConditionalGeneration

    torch.manual_seed(0)
    cfg = MT5Config(vocab_size=60, d_model=64, d_kv=8, d_ff=128, num_layers=2, num_decoder_layers=1,
                    num_heads=standins.T5_HEADS, dropout_rate=0.0, decoder_start_token_id=0)
    cfg._attn_implementation = "eager"
    model = MT5ForConditionalGeneration(cfg)
    standins.priors._lm_init(model)
    standins.priors._local_heads(model)
    standins.priors._match_heads(model)
    # 20 sequences of 10 distinct tokens, position 7 repeating position 2's token
    g = torch.Generator().manual_seed(1)
    ids = torch.stack([torch.randperm(57, generator=g)[:10] + 3 for _ in range(20)])
    ids[:, 7] = ids[:, 2]
    attn = model.get_encoder()(input_ids=ids, output_attentions=True).attentions[0]  # layer 0: (batch, heads, q, k)
    other = (attn[:, :, 2, 7] + attn[:, :, 7, 2]) / 2  # (batch, heads)
    match, free = list(standins.MATCH_HEADS), [h for h in range(8) if h not in standins.MATCH_HEADS][-1]
    assert other[:, match].mean() > 0.6, other.mean(0)
    assert other[:, free].mean() < 0.2  # a head without the prior spreads its attention
    assert attn[:, match, 2, 2].max() < 0.05 and attn[:, match, 7, 7].max() < 0.05  # the offset-0 bias: not itself
    # local heads are untouched, and layer 1's match heads have the same maps (its input is still close to the
    # embeddings at init)
    for head, offset in enumerate(standins.LOCAL_OFFSETS):
        assert attn[:, head, 3:6, 3 + offset:6 + offset].diagonal(dim1=-2, dim2=-1).mean() > 0.8
    layers = model.get_encoder().block
    rows = slice(standins.MATCH_HEADS[0] * cfg.d_kv, (standins.MATCH_HEADS[-1] + 1) * cfg.d_kv)
    for block in layers:
        a = block.layer[0].SelfAttention
        assert torch.equal(a.q.weight[rows], a.k.weight[rows])


def test_statement_examples_pair_scenes_and_use_the_eval_prompts():
    scenes = make_scenes(30, "train", 1)
    texts = standins.WorldText(scenes, 1, ["en", "de"], statements=True)
    assert len(texts.hypotheses) == 3 * len(scenes) and len(texts.pairs) == len(scenes)
    sampler = standins.TaskSampler(texts, ["en", "de"], nli_share=0.3, pair_share=0.3)
    import random
    rng = random.Random(0)
    batches = [sampler.batch(rng, 10) for _ in range(60)]
    # a batch is all pairs or has none (a pair would pad every other input to twice its length)
    kinds = [{isinstance(d[0], tuple) for d in b} for b in batches]
    assert all(len(k) == 1 for k in kinds) and 8 < sum(k == {True} for k in kinds) < 30
    drawn = [d for b in batches for d in b]
    pairs = [d for d in drawn if isinstance(d[0], tuple)]
    singles = [d for d in drawn if not isinstance(d[0], tuple)]
    nli = [d for d in singles if d[1].startswith("Is it guaranteed true that")]
    assert 0.15 < len(nli) / len(singles) < 0.45
    assert {t for _, _, t in pairs} == {"yes", "no"} and {t for _, _, t in nli} == {"yes", "no", "maybe"}
    assert all(p.startswith("Based on the two images") for _, p, _ in pairs)
    # the German statement of a pair is the realiser's, and the prefix is both scene descriptions in order
    (left, right), statement, label = texts.pairs[0]
    ids = [[1, 2], [3], [4, 5, 6]]
    assert standins.scene_prefix(ids, (2, 0)) == [4, 5, 6, 1, 2] and standins.scene_prefix(ids, 1) == [3]
    assert set(statement) == {"en", "de"} and statement["de"] != statement["en"]
    # without statements in the world text, asking for them is an error that says what to do
    with pytest.raises(ValueError, match="statements=True"):
        standins.TaskSampler(standins.WorldText(scenes, 1, ["en"]), ["en"], nli_share=0.2)
    # and with the shares at 0 the draws are exactly the old captions-and-VQA stream
    plain = standins.TaskSampler(texts, ["en", "de"])
    r1, r2 = random.Random(5), random.Random(5)
    old = standins.TaskSampler(standins.WorldText(scenes, 1, ["en", "de"]), ["en", "de"])
    assert [plain.batch(r1, 5) for _ in range(10)] == [old.batch(r2, 5) for _ in range(10)]


def test_every_language_s_word_for_a_value_starts_near_the_scene_s_word():
    """`word_anchors` ties the pieces only ever used for one colour / shape / size / position, in any language, to
    the scene description's word for it, and leaves the instructions' pieces alone; `_aligned_words` then starts
    them at cosine ~WORD_ALIGN to it, and with match heads a German question's colour finds the scene's colour."""
    from transformers import MT5Config, MT5ForConditionalGeneration

    sentences = world_sentences()
    langs = ["en", "de", "ja"]
    tok = standins.t5_tokenizer([s for c in langs for s in sentences[c]] + ["scene: left large green circle"], 600)
    anchors = standins.word_anchors(tok, langs)
    named = {tok.convert_ids_to_tokens(i): tok.decode(a) for i, a in anchors.items()}
    for word, value in (("grüne", "green"), ("Kreis", "circle"), ("links", "left"), ("kleine", "small")):
        pieces = [p for p in named if p.lstrip("▁").startswith(word)]
        assert pieces and {named[p] for p in pieces} == {value}, (word, pieces)
    assert any(p.startswith("緑") or p.startswith("▁緑") for p in named), named
    instructions = {i for c in langs for t in standins.caption_prompts(c) + standins.vqa_prompts("", c)
                    for i in tok(t, add_special_tokens=False)["input_ids"]}
    assert not instructions & set(anchors)
    assert not {i for v in ("green", "circle", "left") for i in tok(v, add_special_tokens=False)["input_ids"]} \
        & set(anchors)  # the scene's own pieces stay where they are

    torch.manual_seed(0)
    cfg = MT5Config(vocab_size=len(tok), d_model=64, d_kv=8, d_ff=128, num_layers=2, num_decoder_layers=1,
                    num_heads=standins.T5_HEADS, dropout_rate=0.0, decoder_start_token_id=0)
    cfg._attn_implementation = "eager"
    model = MT5ForConditionalGeneration(cfg)
    standins.priors._lm_init(model)
    before = model.get_input_embeddings().weight.clone()
    assert standins.priors._aligned_words(model, tok, langs) == len(anchors)
    emb = model.get_input_embeddings().weight
    cos = torch.nn.functional.cosine_similarity
    moved = torch.stack([cos(emb[i], emb[a].mean(0), dim=0) for i, a in anchors.items()])
    assert (moved - standins.WORD_ALIGN).abs().max() < 0.2, moved
    untouched = [i for i in range(len(tok)) if i not in anchors]
    assert torch.equal(emb[untouched], before[untouched])

    standins.priors._local_heads(model)
    standins.priors._match_heads(model)
    scene = tok("scene: left large green circle | right small red square", add_special_tokens=False)["input_ids"]
    question = tok(realise(QExist(NP(shape="circle", colour="green")), "de"), add_special_tokens=False)["input_ids"]
    ids = torch.tensor([scene + question])
    attn = model.get_encoder()(input_ids=ids, output_attentions=True).attentions[0][0]  # (heads, q, k)
    green = scene.index(tok("green", add_special_tokens=False)["input_ids"][0])
    german = [k for k, i in enumerate(question) if i in anchors and tok.decode(anchors[i]) == "green"]
    assert german, tok.convert_ids_to_tokens(question)
    on_green = attn[list(standins.MATCH_HEADS)][:, len(scene) + german[0], green]
    assert on_green.mean() > 0.3, on_green
