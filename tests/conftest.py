import os

# Tests never touch the network: a hub id must fail at once instead of retrying for 20 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Tiny-model helpers (model/train tests): tiny BLIP-2 / mT5 / BLOOM checkpoints saved in HF format with tokenizers
# trained in-test from a few local sentences, then loaded through the real loading code (`from_pretrained`).

import logging  # noqa: E402

logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # "kernels" notice on import, harmless offline

import pytest  # noqa: E402

SENTENCES = [
    "a red circle on the left", "a blue square on the right", "a small green triangle", "two yellow stars",
    "what colour is the shape?", "Caption the image in German.", "Short answer in English:", "red", "blue",
    "green", "yellow", "ein roter Kreis links", "ein blaues Quadrat rechts", "un cercle rouge à gauche",
    "un carré bleu à droite", "un pequeño triángulo verde", "красный круг слева", "синий квадрат справа",
    "左边有一个红色的圆", "右边有一个蓝色的正方形", "左に赤い丸", "duara jekundu kushoto",
]
IMAGE_SIZE, PATCH, NUM_QUERY = 32, 8, 4  # 16 patches + CLS = 17 ViT tokens per image


def save_tokenizer(folder, kind: str):
    """A tokenizer trained in-test: "unigram" (mT5-like, appends </s>) or "bpe" (BLOOM-like byte-level)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = SENTENCES * 4
    if kind == "unigram":
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer, tok.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
        tok.train_from_iterator(texts, trainers.UnigramTrainer(
            vocab_size=200, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"))
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
        hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
        tok.train_from_iterator(texts, trainers.BpeTrainer(
            vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", bos_token="<s>",
                                     unk_token="<unk>")
    hf.save_pretrained(folder)
    return hf


def mt5_config(vocab_size: int, d_model: int = 32):
    from transformers import MT5Config

    return MT5Config(vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                     num_heads=4, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                     tie_word_embeddings=False, dropout_rate=0.0)


def bloom_config(vocab_size: int, hidden_size: int = 48):
    from transformers import BloomConfig

    # initializer_range 0.3, not 0.02: with tied, frozen embeddings that small, logits could never become peaked
    return BloomConfig(vocab_size=vocab_size, hidden_size=hidden_size, n_layer=2, n_head=4, pad_token_id=3,
                       bos_token_id=1, eos_token_id=2, hidden_dropout=0.0, attention_dropout=0.0,
                       initializer_range=0.3)


def blip2_config(text_config, num_query: int = NUM_QUERY, image_token_index=None):
    from transformers import Blip2Config, Blip2QFormerConfig, Blip2VisionConfig

    return Blip2Config(
        vision_config=Blip2VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=4, image_size=IMAGE_SIZE, patch_size=PATCH),
        qformer_config=Blip2QFormerConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=4, cross_attention_frequency=1),
        text_config=text_config, num_query_tokens=num_query, image_token_index=image_token_index)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Folders: "blip2" (English BLIP-2, T5 LM d=32), "mt5" (d=32), "bloom" (h=48), each with a tokenizer."""
    from transformers import (AutoModelForCausalLM, AutoModelForSeq2SeqLM, Blip2ForConditionalGeneration,
                              BlipImageProcessorPil, T5Config)

    import torch

    torch.set_num_threads(1)  # tiny ops: one thread beats two busy shared cores
    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    folders = {name: root / name for name in ("blip2", "mt5", "bloom")}
    en_tok = save_tokenizer(folders["blip2"], "unigram")
    english = T5Config(vocab_size=len(en_tok), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1,
                       num_heads=4, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    blip2 = Blip2ForConditionalGeneration(blip2_config(english))
    with torch.no_grad():  # HF initialises query tokens to zeros; a trained BLIP-2's are not
        blip2.query_tokens.normal_(std=0.02)
    # small shards, so that reading only the vision/Q-Former tensors is exercised through the index
    blip2.save_pretrained(folders["blip2"], max_shard_size="40KB")
    BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(folders["blip2"])

    mt5_tok = save_tokenizer(folders["mt5"], "unigram")
    AutoModelForSeq2SeqLM.from_config(mt5_config(len(mt5_tok))).save_pretrained(folders["mt5"])
    bloom_tok = save_tokenizer(folders["bloom"], "bpe")
    AutoModelForCausalLM.from_config(bloom_config(len(bloom_tok))).save_pretrained(folders["bloom"])
    return folders


@pytest.fixture(scope="session")
def build_tiny(tiny):
    """`build_tiny("mt5" | "bloom", **overrides)` -> MBlip on the tiny folders, with the paper's LoRA settings."""
    from mblip.model import build_mblip

    def build(llm: str, **overrides):
        args = dict(projection="reuse" if llm == "mt5" else "new", lora_rank=8, lora_alpha=16, lora_dropout=0.0,
                    lora_scope="all", stage="realign", device="cpu", seed=0)
        args.update(overrides)
        return build_mblip(tiny["blip2"], tiny[llm], **args)

    return build


def image_embeds(batch: int, num_images: int = 1, seed: int = 0):
    """Random stand-ins for cached ViT features: (B, 17, 32) or (B, K, 17, 32)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    shape = (batch, (IMAGE_SIZE // PATCH) ** 2 + 1, 32)
    if num_images > 1:
        shape = (batch, num_images, *shape[1:])
    return torch.randn(shape, generator=g)
