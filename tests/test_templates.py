"""mblip.templates: the authors' strings verbatim, their caption-template cycling, and the VQA answer rule."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from mblip import languages
from mblip import templates as T

PROTOCOL = Path("/work/shared/reference/mblip-protocol.md")


def test_templates_are_verbatim():
    # Hand-copied from gregor-ge/mBLIP (protocol §6.3, §9), quirks included.
    assert T.CAPTION_TEMPLATES_LANG[1] == "Short {} image caption: "  # trailing space
    assert T.CAPTION_TEMPLATES_LANG[2] == "Image caption (in {}): "
    assert T.CAPTION_TEMPLATES_EN == ("Caption the image.", "Short image caption: ", "Briefly describe the image.",
                                      "Write a short image description.", "Summarize the image.")
    assert T.VQA_TEMPLATES[1] == "Question: {0} Brief answer (in {1}):"
    assert T.VQA_TEMPLATES[3] == "Answer the provided question in {1} with three words or less. {0}"
    assert T.VQG_TEMPLATES[1] == 'Based on the image, create a question (in {}) for which the answer is "{}".'
    assert T.AOKVQA_COT_ANSWER_TEMPLATES[-1] == "{1} because {1}."  # the authors' bug, kept
    assert T.AOKVQA_COT_ANSWER_TEMPLATES[-1].format("it rains", "umbrella") == "umbrella because umbrella."
    assert T.AOKVQA_EXPLANATION_TEMPLATES[3] == 'Why is the answer to the question "{}"  "{}"?'  # two spaces
    assert T.IMAGENET_TEMPLATES[8] == "Complete the sentence in {}. This is a photo of a"
    assert T.IMAGENET_DECIDE_TEMPLATES[7] == ("Can you see a {} in the image?", "Yes, you can.", "No, you can not.")
    assert T.MATCHING_TEMPLATES[2][0] == 'Does  "{}" correctly summarize the image?'  # two spaces
    assert T.MATCHING_TEMPLATES[7] == ("Is this caption a good match for the picture? {}. Answer: ", "Yes, it is.",
                                       "No, it is not.")
    assert T.MATCHING_TEMPLATES[8][0] == "Decide if this captions is a correct summary of the image: {}."
    assert (len(T.CAPTION_TEMPLATES_LANG), len(T.VQA_TEMPLATES), len(T.VQG_TEMPLATES), len(T.IMAGENET_TEMPLATES),
            len(T.IMAGENET_DECIDE_TEMPLATES), len(T.MATCHING_TEMPLATES)) == (6, 6, 5, 11, 8, 12)


def test_eval_prompts_are_verbatim():
    assert T.eval_prompt("xgqa", "Is it red?") == "Question: Is it red? Short answer in English:"
    assert T.eval_prompt("xvnli", "A dog runs.") == \
        'Is it guaranteed true that "A dog runs."? Yes, no, or maybe? Answer in English:'
    assert T.EVAL_PROMPTS["marvl"] == 'Based on the two images, is it correct to say "{}"? Yes or no?'
    assert T.EVAL_PROMPTS["marvl_datamodule_default"] == T.EVAL_PROMPTS["marvl"] + " Answer in English:"
    assert T.eval_prompt("xm3600", "uk") == "Caption in Ukranian: "  # typo and trailing space are the protocol
    assert T.eval_prompt("xm3600", "pt") == "Caption in Portugese: "
    assert T.eval_prompt("xm3600", "bn") == "Caption in Bengali: " and T.eval_prompt("xm3600", "fa") == \
        "Caption in Farsi: "
    assert T.eval_prompt("xflickrco", "ja") == "Caption in Japanese: "
    assert T.eval_prompt("maxm", "Quelle couleur?", "fr") == "Question: Quelle couleur? Short answer in French:"
    assert T.eval_prompt("maxm", "?", "iw").endswith("Short answer in Hebrew:")  # not "former Hebrew"
    assert T.eval_prompt("chair_short", "English") == "Caption in English:"
    assert T.eval_prompt("chair_long", "English") == "Describe the image in English with as much detail as possible."
    assert T.eval_prompt("coco", "English") == "Caption in English: "
    assert T.eval_prompt("pope", "Is there a dog in the image?") == "Is there a dog in the image?"
    assert len(T.XM3600_LANGUAGE_NAMES) == 36 and list(T.XM3600_LANGUAGE_NAMES)[:3] == ["fa", "te", "ko"]
    with pytest.raises(KeyError, match="xm3600 has no language 'xx'"):
        T.eval_prompt("xm3600", "xx")
    with pytest.raises(KeyError, match="unknown benchmark"):
        T.eval_prompt("gqa", "?")


@pytest.mark.skipif(not PROTOCOL.exists(), reason="shared protocol text not available")
def test_templates_appear_in_the_protocol_text():
    """Cross-check against the protocol's own quotation of the authors' code."""
    text = PROTOCOL.read_text(encoding="utf-8")
    for s in (*T.CAPTION_TEMPLATES_LANG, *T.CAPTION_TEMPLATES_EN, *T.VQA_TEMPLATES, *T.AOKVQA_COT_QUESTION_TEMPLATES,
              *T.AOKVQA_COT_ANSWER_TEMPLATES, *T.IMAGENET_TEMPLATES, T.MATCHING_TEMPLATES[0][0],
              T.IMAGENET_DECIDE_TEMPLATES[4][0], *list(T.XM3600_LANGUAGE_NAMES.values())):
        assert f'"{s}"' in text or f"'{s}'" in text, s


def test_caption_cycling_order_for_a_language():
    translated_de = ["Beschriften Sie das Bild.", "Kurze image caption: ", "Beschreiben Sie das Bild kurz.",
                     "Schreiben Sie eine kurze Bildbeschreibung.", "Fassen Sie das Bild zusammen."]
    langs = ["de", "en", "de", "de", "en"] + ["de"] * 8
    out = T.caption_template_cycle(langs, {"de": translated_de})
    de = [o for lang, o in zip(langs, out) if lang == "de"]
    expected_de = [t.format("German") for t in T.CAPTION_TEMPLATES_LANG] + [
        "Beschriften Sie das Bild.", "Beschreiben Sie das Bild kurz.",  # "Kurze image caption: " is discarded
        "Schreiben Sie eine kurze Bildbeschreibung.", "Fassen Sie das Bild zusammen."]
    assert de == expected_de + expected_de[:1]  # 11 examples, then it wraps around
    en = [o for lang, o in zip(langs, out) if lang == "en"]
    assert en == ["Caption the image in English.", "Short English image caption: "]  # own counter per language
    assert T.caption_templates("iw", [])[0] == "Caption the image in former Hebrew."  # the authors' name quirk
    assert T.caption_templates("en")[6:] == list(T.CAPTION_TEMPLATES_EN)
    with pytest.raises(ValueError, match="translated_en="):
        T.caption_templates("de")


def test_vqa_answer_rule_statistics():
    labels = {"dog": "Hund", "2": "2", "red": "rot"}  # "2" translates to itself
    rng = random.Random(42)
    draws = [T.vqa_answer_language("de", "dog", labels, rng) for _ in range(4000)]
    translated = sum(d == ("Hund", "German") for d in draws)
    assert 0.46 < translated / len(draws) < 0.54
    assert all(d in {("Hund", "German"), ("dog", "English")} for d in draws)

    state = rng.getstate()
    assert all(T.vqa_answer_language("en", "dog", {"dog": "Hund"}, rng) == ("dog", "English") for _ in range(200))
    assert all(T.vqa_answer_language("de", "cat", labels, rng) == ("cat", "English") for _ in range(200))
    assert all(T.vqa_answer_language("de", "2", labels, rng) == ("2", "English") for _ in range(200))
    assert T.vqa_answer_language("de", "dog", None, rng) == ("dog", "English")
    assert rng.getstate() == state  # ineligible examples draw nothing, like the authors' short-circuit

    assert T.vqa_answer_language("iw", "dog", {"dog": "כלב"}, random.Random(3))[1] in {"former Hebrew", "English"}
    a = [T.vqa_answer_language("de", "red", labels, random.Random(7)) for _ in range(3)]
    assert len(set(a)) == 1  # same seed, same decision


def test_vqa_and_vqg_examples_follow_the_authors_random_stream():
    labels = {"dog": "Hund"}
    rng, mirror = random.Random(42), random.Random(42)
    for _ in range(50):
        context, label = T.vqa_example("Was ist das?", "de", "dog", labels, rng)
        # the authors: `mt_label == label or random.random() < 0.5` -> English; then random.choice(vqa_templates)
        lang, answer = ("English", "dog") if mirror.random() < 0.5 else ("German", "Hund")
        assert (context, label) == (mirror.choice(T.VQA_TEMPLATES).format("Was ist das?", lang), answer)
    context, label = T.vqg_example("Was ist das?", "de", "cat", labels, random.Random(0))
    assert label == "Was ist das?" and "English" in context and "cat" in context
    assert languages.get("de").name == "German"
