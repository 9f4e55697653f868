"""The textual scene description, the task samplers and the tokenizers of the stand-ins (`mblip.demo.standins`).

What a text-only LM reads in place of an image (`scene_text`), the world's captions, questions and statements
realised once in every language (`WorldText`), the seeded draw of training examples (`TaskSampler`), and the T5-,
BLOOM- and NLLB-style tokenizers trained on the world's own text.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Sequence

import numpy as np

from mblip import languages as language_table
from mblip import templates
from mblip.demo import annotate
from mblip.demo.realise import N_CAPTION_VARIANTS, realise, sample_meanings
from mblip.demo.world import Scene

IMAGE_TOKEN = "<image>"
# Special tokens, in the id order of the real models' vocabularies.
T5_SPECIALS = ("<pad>", "</s>", "<unk>", IMAGE_TOKEN)  # T5 / mT5: pad 0, eos 1 (= decoder start 0)
BLOOM_SPECIALS = ("<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN)  # BLOOM: unk 0, bos 1, eos 2, pad 3
NLLB_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # NLLB: bos 0, pad 1, eos 2 (= decoder start), unk 3


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


def _per_lang(rec: dict, *fields: str) -> dict:
    """{lang: value} of one annotation record, English and every gold language; value = rec's field, or a tuple of
    fields when several are named."""
    def get(t):
        return t[fields[0]] if len(fields) == 1 else tuple(t[f] for f in fields)
    return {"en": get(rec["en"]), **{c: get(t) for c, t in rec["gold"].items()}}


def _captions(scenes: Sequence[Scene], seed: int, langs: Sequence[str]) -> list[tuple[int, list[dict]]]:
    """(scene index, [{lang: caption} per caption variant]) for every scene."""
    recs = annotate.captions(scenes, seed, [c for c in langs if c != "en"])
    texts = [_per_lang(r, "caption") for r in recs]
    return [(i, texts[i * N_CAPTION_VARIANTS:(i + 1) * N_CAPTION_VARIANTS]) for i in range(len(scenes))]


def _questions(scenes: Sequence[Scene], seed: int, langs: Sequence[str], make=annotate.vqa) -> list[tuple[int, dict]]:
    """(scene index, {lang: (question, answer)}) for the VQA (or GQA) questions of every scene."""
    index = {annotate.image_path(s.id): i for i, s in enumerate(scenes)}
    recs = make(scenes, seed, [c for c in langs if c != "en"])
    return [(index[r["image"]], _per_lang(r, "question", "answer")) for r in recs]


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
    return [(index[r["image"]], _per_lang(r, "hypothesis"), templates.XVNLI_LABELS[r["label"]])
            for r in annotate.nli(scenes, seed, [c for c in langs if c != "en"])]


def _statements(scenes: Sequence[Scene], seed: int, langs: Sequence[str]) -> list[tuple[tuple[int, int], dict, str]]:
    """((left, right) scene indices, {lang: statement}, yes / no) for MaRVL-style statements over scene pairs."""
    index = {s.id: i for i, s in enumerate(scenes)}
    return [((index[r["left"]], index[r["right"]]), _per_lang(r, "statement"), "yes" if r["label"] else "no")
            for r in annotate.two_image(scenes, seed, [c for c in langs if c != "en"])]


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
