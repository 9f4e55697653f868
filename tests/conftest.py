import os

# Tests never touch the network: a hub id must fail at once instead of retrying for 20 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Tiny-model helpers (model/train tests): tiny BLIP-2 / mT5 / BLOOM checkpoints saved in HF format with tokenizers
# trained in-test from a few local sentences, then loaded through the real loading code (`from_pretrained`).

import logging  # noqa: E402

logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # "kernels" notice on import, harmless offline

from pathlib import Path  # noqa: E402

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

    from mblip.demo.standins.text import _respecial

    texts = SENTENCES * 4
    if kind == "unigram":
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer, tok.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
        tok.train_from_iterator(texts, trainers.UnigramTrainer(
            vocab_size=200, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"))
        # the trainer's scores differ between processes in the last bits, and near-ties swap token ids: without a
        # canonical order every run of the suite had other tiny models (and a learning test failed in one CI run)
        tok = _respecial(tok, ["<pad>", "</s>", "<unk>"])
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


# ------------------------------------------------------------------------------------------------ tiny NLLB
# An M2M100 model (d_model 64, one layer each side) with an NllbTokenizer whose BPE vocabulary is trained in-test;
# it carries all 202 NLLB language-code tokens and is trained for ~1 s to copy its input, so its outputs depend on
# the input (tests/test_translate.py, tests/test_stages_paper.py).
NLLB_CORPUS = [
    "a red circle on the left",
    "two blue squares",
    "a small green triangle above a large red square",
    "three red circles and a blue square",
    "blue circle",
    "a yellow star",
    "the square is next to the circle",
    "one green circle below two yellow triangles on the right",
    "ein roter Kreis links",
    "zwei blaue Quadrate",
    "красный круг слева",
    "два синих квадрата",
    "左边的红色圆圈",
    "两个蓝色方块",
]
NLLB_ENGLISH = NLLB_CORPUS[:8]


def build_tiny_nllb(folder: Path, seed: int = 0, steps: int = 150) -> None:
    """Save the tiny NLLB-format translator (model + tokenizer) into ``folder`` with ``save_pretrained``."""
    import json

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import M2M100Config, M2M100ForConditionalGeneration, NllbTokenizer

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bpe.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bpe.train_from_iterator(NLLB_CORPUS * 3, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], show_progress=False))
    merges = [tuple(m) for m in json.loads(bpe.to_str())["model"]["merges"]]
    tok = NllbTokenizer(vocab=bpe.get_vocab(), merges=merges)  # default extra tokens: the 202 NLLB codes
    tok.save_pretrained(folder)

    cfg = M2M100Config(vocab_size=len(tok), d_model=64, encoder_layers=1, decoder_layers=1,
                       encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
                       max_position_embeddings=64, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                       pad_token_id=tok.pad_token_id, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)
    torch.manual_seed(seed)
    model = M2M100ForConditionalGeneration(cfg)
    # Teach it to copy the English sentences (target format: <tgt code> tokens </s>), whatever the target code.
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    tok.src_lang = "eng_Latn"
    batches = []
    for tgt in ("deu_Latn", "zho_Hant"):
        tok.tgt_lang = tgt
        enc = tok(NLLB_ENGLISH, text_target=NLLB_ENGLISH, padding=True, return_tensors="pt")
        enc["labels"] = enc["labels"].masked_fill(enc["labels"] == tok.pad_token_id, -100)
        batches.append(enc)
    for step in range(steps):
        loss = model(**batches[step % 2]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(folder)


# ------------------------------------------------------------------------------------------------ paper sources
# Hand-made files in each official format, laid out like data/paper (tests/test_taskmix_paper.py,
# tests/test_stages_paper.py); the images are written here.
TASKMIX_FIXTURES = Path(__file__).parent / "fixtures" / "taskmix"
PAPER_WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361"]


def _image_bytes(fmt: str, seed: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    b = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(b, fmt)
    return b.getvalue()


def write_image(root: Path, rel: str, fmt: str = "JPEG", truncated: bool = False, seed: int = 0) -> None:
    data = _image_bytes(fmt, seed)
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    # cut the last quarter: headers intact, so only a decode (not PIL's verify) can tell a JPEG is truncated
    path.write_bytes(data[: len(data) * 3 // 4] if truncated else data)


def make_paper_root(tmp: Path) -> Path:
    """``tmp/paper``: the fixture sources + images. Broken on purpose: CapFilt 00000003 missing and 00000004
    truncated (JPEG), COCO 30 truncated (PNG bytes), COCO 77 missing, ImageNet n01443537_1 truncated. COCO 42 is
    only in val2014."""
    import shutil

    root = tmp / "paper"
    shutil.copytree(TASKMIX_FIXTURES, root, ignore=shutil.ignore_patterns("broken"))
    for i in (0, 1, 2, 5, 6, 7):
        write_image(root, f"webcapfilt/images/{i:08d}.jpg", seed=i)
    write_image(root, "webcapfilt/images/00000004.jpg", truncated=True)
    for cid in (9, 25):
        write_image(root, f"coco/train2014/COCO_train2014_{cid:012d}.jpg", seed=cid)
    write_image(root, "coco/train2014/COCO_train2014_000000000030.jpg", "PNG", truncated=True)
    write_image(root, "coco/val2014/COCO_val2014_000000000042.jpg", "PNG")
    for w in PAPER_WNIDS:
        for k in range(6):
            write_image(root, f"imagenet/train/{w}/{w}_{k}.JPEG", truncated=(w, k) == ("n01443537", 1), seed=k)
    return root
