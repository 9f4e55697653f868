"""Instruction templates and evaluation prompts of mBLIP, as data.

Every string below is quoted verbatim from the authors' public code, ``gregor-ge/mBLIP`` (commit 0380e68 as cited in
``reference/mblip-protocol.md`` §6.3 and §9; spot-checked against the stored copies at a190ce5 / 9e06ad1), with the
file and lines named above each block. They define the protocol, so typos, double spaces, trailing spaces and one
outright bug are kept on purpose and documented where they occur. Do not "fix" them: the paper's numbers were
produced with these exact strings.

Besides the data, three small pieces of the authors' logic live here because they decide which template an example
gets:

* :func:`caption_template_cycle` -- the deterministic per-language cycling through the caption templates
  (``data/pretrain/generate_train.py`` ``generate_mt``);
* :func:`vqa_answer_language` -- the VQA answer-translation rule (``data/vqa/generate_train.py`` ``generate_mt``);
* :func:`vqa_example` / :func:`vqg_example` -- one VQA / VQG training example, template included.

Language names in training prompts come from ``mblip.languages`` (``languages.get(code).name``, with the authors'
quirks such as ``iw`` -> "former Hebrew"). Evaluation prompts use their own name tables below
(:data:`XM3600_LANGUAGE_NAMES`, :data:`XFLICKRCO_LANGUAGE_NAMES`, :data:`MAXM_LANGUAGE_NAMES`).
"""
from __future__ import annotations

import random
from collections import defaultdict
from typing import Iterable, Mapping, Sequence

from mblip import languages

# ---------------------------------------------------------------------------------------------------------------
# Captioning (Web CapFilt, MSCOCO). Source: gregor-ge/mBLIP data/pretrain/generate_train.py#L10-18
# (identical in data/mscoco/generate_train.py#L11-20). Note the trailing spaces after the colons.
# ---------------------------------------------------------------------------------------------------------------
CAPTION_TEMPLATES_LANG: tuple[str, ...] = (
    "Caption the image in {}.",
    "Short {} image caption: ",
    "Image caption (in {}): ",
    "Briefly describe the image in {}.",
    "Write a short {} image description.",
    "Summarize the image in {}.",
)
"""``templates_lang``: formatted with the English name of the caption's language."""

CAPTION_TEMPLATES_EN: tuple[str, ...] = (
    "Caption the image.",
    "Short image caption: ",
    "Briefly describe the image.",
    "Write a short image description.",
    "Summarize the image.",
)
"""``templates_en``: used as-is for English, machine-translated (NLLB) into every other language."""

CAPTION_TEMPLATE_DISCARD = "image caption"
"""Translated templates containing this literal English string are discarded (data/pretrain/translate_train.py#L66;
the MSCOCO copy, data/mscoco/translate_train.py#L66, filters ``"Image caption"`` instead)."""

# ---------------------------------------------------------------------------------------------------------------
# VQA and VQG (VQAv2). Source: gregor-ge/mBLIP data/vqa/generate_train.py#L12-25.
# VQA: {0} = (translated) question, {1} = answer language. VQG: first {} = language, second {} = answer.
# ---------------------------------------------------------------------------------------------------------------
VQA_TEMPLATES: tuple[str, ...] = (
    "{0} Short {1} answer:",
    "Question: {0} Brief answer (in {1}):",
    "Give a short answer in {1} to the following question. {0}",
    "Answer the provided question in {1} with three words or less. {0}",
    "What is the {1} answer to this question? {0}",
    "Briefly answer in {1}. {0}",
)

VQG_TEMPLATES: tuple[str, ...] = (
    "Given the image, generate a question in {} whose answer is: {}. Question:",
    'Based on the image, create a question (in {}) for which the answer is "{}".',
    "From the image provided, come up with a {} question that leads to the reply: {}. Question:",
    'What is a {} question for the image with the answer "{}"?',
    'Given the image, what would be a {} question that has as answer "{}"?',
)

# ---------------------------------------------------------------------------------------------------------------
# A-OKVQA (English only). Source: gregor-ge/mBLIP data/aokvqa/generate_train.py#L12-30.
# ---------------------------------------------------------------------------------------------------------------
AOKVQA_COT_QUESTION_TEMPLATES: tuple[str, ...] = (
    "Reason the answer to the following question. {}",
    "Use reasoning to come to an answer for this question. {}",
    "Think step-by-step to answer this question. {}",
    "Answer the following question and explain your answer. {}",
    "{} What is the answer and why?",
)

AOKVQA_COT_ANSWER_TEMPLATES: tuple[str, ...] = (
    "{0}. So the answer is {1}",
    "{0} so {1}",
    "{0}. This means the answer is {1}",
    "The answer is {1} because {0}.",
    # AUTHORS' BUG, kept for fidelity: "{1} because {1}." repeats the answer and drops the rationale ({0}),
    # e.g. "umbrella because umbrella.". It should have been "{1} because {0}.". Formatted with
    # .format(rationale, answer) like the others. The last two templates were added in v2, and whether the released
    # v2 mix contains them is unverified (protocol §6.3: the script writes aokvqa_cot_en_v2.json, merge_train.py
    # merges aokvqa_cot_en.json).
    "{1} because {1}.",
)

AOKVQA_EXPLANATION_TEMPLATES: tuple[str, ...] = (
    "Question: {}: Answer: {}. Explanation:",
    "Question: {}: Answer: {}. The reason is because ",
    'The answer to the question "{}" is "{}". Why?',
    'Why is the answer to the question "{}"  "{}"?',  # two spaces, verbatim
    'Explain why the answer to the question "{}" is "{}".',
)

# ---------------------------------------------------------------------------------------------------------------
# ImageNet classification ({} = language name) and object verification ({} = class name in the target language,
# English template and answers). Source: gregor-ge/mBLIP data/imagenet/generate_train.py#L12-35.
# ---------------------------------------------------------------------------------------------------------------
IMAGENET_TEMPLATES: tuple[str, ...] = (
    "What is the main focus of the image? Short {} answer:",
    "What is in the image? Answer briefly in {}.",
    "This is an image of what? Answer briefly in {}.",
    "What is the central object in the image? Give a short {} answer.",
    "The focus of the image is of what? Short {} answer:",
    "Question: This is an image of what? Answer briefly in {}.",
    "What is at the center of this picture? Short {} answer:",
    "Give a short answer in {} to the following question. What is the main thing shown in the image?",
    "Complete the sentence in {}. This is a photo of a",
    "Name the main thing of this photo in {}:",
    "In less than 3 words in {}, what can be seen in this image?",
)

IMAGENET_DECIDE_TEMPLATES: tuple[tuple[str, str, str], ...] = (
    # (template, answer if the class is shown, answer if it is not)
    ("Does this image show a {}?", "Yes, it does.", "No, it does not."),
    ("Is there a {}?", "Yes, there is.", "No, there is not."),
    ("Are there any {} in the picture?", "Yes, there are.", "No, there are not."),
    ("Does the image contain a {}?", "Yes, it does.", "No, it does not."),
    ("Yes or no, there is a {} in the photo.", "Yes", "No"),
    ("Yes or no, there is a {} visible in the image.", "Yes", "No"),
    ("Does this picture have a {} in it?", "Yes, it does.", "No, it does not."),
    ("Can you see a {} in the image?", "Yes, you can.", "No, you can not."),
)

# ---------------------------------------------------------------------------------------------------------------
# Image-caption matching ({} = the translated caption; template and yes/no answers stay English).
# Source: gregor-ge/mBLIP data/pretrain/generate_match_train.py#L14-27. Double space in the third template, the
# trailing space in the eighth and "this captions" in the ninth are verbatim.
# ---------------------------------------------------------------------------------------------------------------
MATCHING_TEMPLATES: tuple[tuple[str, str, str], ...] = (
    # (template, answer for a matching caption, answer for a hard negative)
    ('Does "{}" accurately describe the image?', "Yes, it does.", "No, it does not."),
    ('Does the caption "{}" fit the picture?', "Yes, it does.", "No, it does not."),
    ('Does  "{}" correctly summarize the image?', "Yes, it does.", "No, it does not."),
    ('Is "{}" a good image description?', "Yes, it is.", "No, it is not."),
    ('Is "{}" a correct caption for the picture?', "Yes, it is.", "No, it is not."),
    ('Is the caption "{}" a good match for the image?', "Yes, it is.", "No, it is not."),
    ("Decide if the following caption accurately describes the image: {}. Answer:", "Yes, it does.",
     "No, it does not."),
    ("Is this caption a good match for the picture? {}. Answer: ", "Yes, it is.", "No, it is not."),
    ("Decide if this captions is a correct summary of the image: {}.", "Yes, it is.", "No, it is not."),
    ('Would "{}" be a good image summary?', "Yes, it would.", "No, it would not."),
    ('Would the caption "{}" fit the picture?', "Yes, it would.", "No, it would not."),
    ('Could you use "{}" as a caption for the image?', "Yes, you could.", "No, you could not."),
)

# ---------------------------------------------------------------------------------------------------------------
# Evaluation prompts (protocol §9). Each is a str.format template with positional fields.
# Sources: configs/datamodule/mblip_{xgqa,xvnli,marvl,xm3600,flickr,vqa2,mscoco,halu_chair,halu_pope}.yaml,
# configs/experiment/mblip_{test,finetune}_marvl.yaml, data/maxm/generate_maxm.py,
# data/xm3600/convert_xm3600_to_coco.py.
# ---------------------------------------------------------------------------------------------------------------
EVAL_PROMPTS: dict[str, str] = {
    # xGQA and VQAv2: {} = question; the answer is always requested in English.
    "xgqa": "Question: {} Short answer in English:",
    "vqav2": "Question: {} Short answer in English:",
    # XVNLI: {} = hypothesis (sentence2); targets yes / no / maybe (XVNLI_LABELS).
    "xvnli": 'Is it guaranteed true that "{}"? Yes, no, or maybe? Answer in English:',
    # MaRVL / NLVR2: {} = statement; two images. The fine-tune config (configs/experiment/mblip_finetune_marvl.yaml)
    # and, in the stored copy of configs/experiment/mblip_test_marvl.yaml, the test config too, override the
    # datamodule default (configs/datamodule/mblip_marvl.yaml) with this version without " Answer in English:".
    # Protocol §9 says the test config uses the default; reference/eval-suite.md §5 says it overrides. Both kept.
    "marvl": 'Based on the two images, is it correct to say "{}"? Yes or no?',
    "marvl_datamodule_default": 'Based on the two images, is it correct to say "{}"? Yes or no? Answer in English:',
    # Captioning: {} = language name from XFLICKRCO_LANGUAGE_NAMES / XM3600_LANGUAGE_NAMES. Trailing space verbatim.
    "xflickrco": "Caption in {}: ",
    "xm3600": "Caption in {}: ",
    "coco": "Caption in {}: ",  # formatted with "English"
    # MaXM: {0} = question, {1} = language name from MAXM_LANGUAGE_NAMES (the answer is requested in the
    # question's language, unlike xGQA). The authors pre-format it in data/maxm/generate_maxm.py.
    "maxm": "Question: {0} Short answer in {1}:",
    # POPE: the POPE question verbatim ("Is there a ... in the image?").
    "pope": "{}",
    # CHAIR: {} = "English". The short variant has no trailing space (unlike "coco").
    "chair_short": "Caption in {}:",
    "chair_long": "Describe the image in {} with as much detail as possible.",
}

TRAINING_VALIDATION_PROMPTS: dict[str, str] = {
    # Prompts of the validation sets *during instruction training* (configs/datamodule/mblip_train.yaml; protocol
    # §8.2). They differ from the test prompts above; never use them for reported numbers.
    "xgqa": "Question: {}. Short answer (in English):",
    "xvnli": "Does the following statement follow? {}. Yes, no, or maybe? Answer in English:",
}

XVNLI_LABELS: dict[str, str] = {"entailment": "yes", "contradiction": "no", "neutral": "maybe"}
"""Gold label -> target string (data/xvnli/generate_xvnli.py; protocol §9)."""

MARVL_LABELS: dict[str, str] = {"True": "yes", "False": "no"}
"""``str(label)`` -> target string (``target2str`` in configs/datamodule/mblip_marvl.yaml)."""

XM3600_LANGUAGE_NAMES: dict[str, str] = dict(zip(
    # xm3600_langs and full_lang of data/xm3600/convert_xm3600_to_coco.py, in the authors' order.
    # The typos "Ukranian" and "Portugese" are verbatim and part of the protocol; bn is "Bengali" here (the training
    # prompts say "Bangla"), he is "Hebrew" (training: iw "former Hebrew"), fa is "Farsi" (training: "Persian").
    ["fa", "te", "ko", "fi", "fil", "mi", "hu", "id", "hr", "fr", "quz", "sv", "zh", "sw", "no", "vi", "da", "ja",
     "nl", "he", "th", "ru", "it", "hi", "uk", "de", "pt", "tr", "cs", "pl", "bn", "ar", "ro", "en", "es", "el"],
    ["Farsi", "Telugu", "Korean", "Finnish", "Filipino", "Maori", "Hungarian", "Indonesian", "Croatian", "French",
     "Quechua", "Swedish", "Chinese", "Swahili", "Norwegian", "Vietnamese", "Danish", "Japanese", "Dutch", "Hebrew",
     "Thai", "Russian", "Italian", "Hindi", "Ukranian", "German", "Portugese", "Turkish", "Czech", "Polish",
     "Bengali", "Arabic", "Romanian", "English", "Spanish", "Greek"],
    strict=True,
))

XFLICKRCO_LANGUAGE_NAMES: dict[str, str] = {
    # data/flickr/generate_flickr.py (lang_code2lang of the listed codes; en = Flickr30k test).
    "en": "English", "de": "German", "es": "Spanish", "id": "Indonesian", "ja": "Japanese", "ru": "Russian",
    "tr": "Turkish", "zh": "Chinese",
}

MAXM_LANGUAGE_NAMES: dict[str, str] = {
    # data/maxm/generate_maxm.py, whose lang_code2lang has iw -> "Hebrew" (not "former Hebrew").
    "en": "English", "fr": "French", "hi": "Hindi", "iw": "Hebrew", "ro": "Romanian", "th": "Thai", "zh": "Chinese",
}


def eval_prompt(benchmark: str, *fields: str) -> str:
    """The evaluation prompt of ``benchmark`` (a key of :data:`EVAL_PROMPTS`) formatted with ``fields``.

    Caption benchmarks take a language *code* and look its name up in the benchmark's own table, so the authors'
    spellings are used: ``eval_prompt("xm3600", "uk") == "Caption in Ukranian: "``;
    ``eval_prompt("maxm", question, "iw")`` gives ``"Question: ... Short answer in Hebrew:"``.
    """
    if benchmark not in EVAL_PROMPTS:
        raise KeyError(f"unknown benchmark {benchmark!r}; known: {', '.join(EVAL_PROMPTS)}")
    names = {"xm3600": XM3600_LANGUAGE_NAMES, "xflickrco": XFLICKRCO_LANGUAGE_NAMES}.get(benchmark)
    if names is not None:
        (code,) = fields
        if code not in names:
            raise KeyError(f"{benchmark} has no language {code!r}; its languages: {' '.join(names)}")
        return EVAL_PROMPTS[benchmark].format(names[code])
    if benchmark == "maxm":
        question, code = fields
        if code not in MAXM_LANGUAGE_NAMES:
            raise KeyError(f"maxm has no language {code!r}; its languages: {' '.join(MAXM_LANGUAGE_NAMES)}")
        return EVAL_PROMPTS["maxm"].format(question, MAXM_LANGUAGE_NAMES[code])
    return EVAL_PROMPTS[benchmark].format(*fields)


# ---------------------------------------------------------------------------------------------------------------
# Caption template cycling (data/pretrain/generate_train.py generate_mt; protocol §6.3)
# ---------------------------------------------------------------------------------------------------------------
def keep_translated_caption_templates(translated: Sequence[str], discard: str = CAPTION_TEMPLATE_DISCARD) -> list[str]:
    """Drop translated caption templates that still contain the English ``discard`` string (case-sensitive, as the
    authors' filter; pass ``discard="Image caption"`` for the MSCOCO variant)."""
    return [t for t in translated if discard not in t]


def caption_templates(code: str, translated_en: Sequence[str] | None = None,
                      discard: str = CAPTION_TEMPLATE_DISCARD) -> list[str]:
    """The templates one language cycles through, in the authors' order.

    ``CAPTION_TEMPLATES_LANG`` formatted with the language's prompt name (``languages.get(code).name``), followed by
    the NLLB translations of ``CAPTION_TEMPLATES_EN`` into that language (``translated_en``, same order) minus those
    containing ``discard``. For English the second block is ``CAPTION_TEMPLATES_EN`` itself.
    """
    name = languages.get(code).name
    first = [t.format(name) for t in CAPTION_TEMPLATES_LANG]
    if code == "en":
        return first + list(CAPTION_TEMPLATES_EN)
    if translated_en is None:
        raise ValueError(
            f"caption_templates({code!r}) needs the NLLB translations of CAPTION_TEMPLATES_EN into {name}: pass "
            f"translated_en=Translator(...).translate(list(CAPTION_TEMPLATES_EN), {languages.get(code).nllb!r})")
    return first + keep_translated_caption_templates(translated_en, discard)


def caption_template_cycle(example_langs: Iterable[str], translated: Mapping[str, Sequence[str]],
                           discard: str = CAPTION_TEMPLATE_DISCARD) -> list[str]:
    """The instruction of each caption example, given the language code of each example in file order.

    A counter per language walks deterministically through :func:`caption_templates` of that language and wraps
    around (the authors' ``lang_counter[lang] % (len(templates_lang) + len(mt_templates[lang]))``); no randomness.
    ``translated`` maps a language code to the (unfiltered) NLLB translations of ``CAPTION_TEMPLATES_EN``.
    """
    per_lang: dict[str, list[str]] = {}
    counter: dict[str, int] = defaultdict(int)
    out = []
    for code in example_langs:
        if code not in per_lang:
            per_lang[code] = caption_templates(code, translated.get(code), discard)
        templates = per_lang[code]
        out.append(templates[counter[code] % len(templates)])
        counter[code] += 1
    return out


# ---------------------------------------------------------------------------------------------------------------
# VQA answer language (data/vqa/generate_train.py generate_mt; protocol §6.3)
# ---------------------------------------------------------------------------------------------------------------
def vqa_answer_language(question_lang: str, answer_en: str, labels: Mapping[str, str] | None,
                        rng: random.Random, p_translate: float = 0.5) -> tuple[str, str]:
    """Decide the answer and the answer language (the ``{1}`` of the VQA / VQG templates) of one example.

    ``question_lang`` is the example's language code, ``answer_en`` the English VQAv2 answer, ``labels`` that
    language's answer dictionary (English answer -> translation; the authors' ``vqav2_mt_google_labels.json[code]``).
    The rule: for a non-English question whose answer is in the dictionary with a translation that differs from the
    English string, with probability ``p_translate`` return ``(translation, language name)``; in every other case
    return ``(answer_en, "English")``.

    ``rng`` is drawn from (one ``rng.random()``) only for eligible examples, exactly as the authors' short-circuit
    ``mt_label == label or random.random() < 0.5``, so a ``random.Random(42)`` shared with the template choice
    reproduces their random stream.
    """
    if question_lang != "en" and labels and answer_en in labels:
        translated = labels[answer_en]
        # Authors: English if the translation equals the answer, or if random.random() < 0.5.
        if translated != answer_en and not rng.random() < 1.0 - p_translate:
            return translated, languages.get(question_lang).name
    return answer_en, "English"


def vqa_example(question: str, question_lang: str, answer_en: str, labels: Mapping[str, str] | None,
                rng: random.Random) -> tuple[str, str]:
    """(context, label) of one VQA training example: answer language, then a random template, as the authors."""
    answer, answer_lang = vqa_answer_language(question_lang, answer_en, labels, rng)
    return rng.choice(VQA_TEMPLATES).format(question, answer_lang), answer


def vqg_example(question: str, question_lang: str, answer_en: str, labels: Mapping[str, str] | None,
                rng: random.Random) -> tuple[str, str]:
    """(context, label) of one VQG training example: the prompt names the answer and the answer language; the target
    is the (translated) question.

    Authors' quirk, kept: both template slots take the *answer* language, so when the answer stays English the
    prompt asks for "a question in English" while the target question is in ``question_lang``.
    """
    answer, answer_lang = vqa_answer_language(question_lang, answer_en, labels, rng)
    return rng.choice(VQG_TEMPLATES).format(answer_lang, answer), question
