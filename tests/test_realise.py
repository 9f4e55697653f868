"""Realisers: every meaning in every language, no English leaking, agreement where languages agree,
and question answers that are true of the scene."""

import re

import numpy as np
import pytest

from mblip.demo import annotate
from mblip.demo.realise import (
    ALL_ANSWERS, LANGUAGES, MEANING_TYPES, N_CAPTION_VARIANTS, NP, REALISERS, SHARED_SPELLINGS, TEMPLATE_KEYS,
    Answer, Caption, QBoth, QColour, QCompare, QCount, QExist, QRelation, QShape, QSize, QWhere, Realiser, Rel,
    SCount, SExist, SRelation, SSize, SWhere, TBoth, TExactlyOne, TMore, TNeither, TSameCount, english_content_words,
    realise, sample_meanings,
)
from mblip.demo.world import POSITIONS, Obj, make_scenes

NON_LATIN = ("ru", "ar", "zh", "ja")
NO_SPACES = ("zh", "ja")


def _annotation_meanings():
    """Meanings as the annotators build them (refs, relations, negatives) on real scenes."""
    rng = np.random.default_rng(0)
    out = []
    for s in make_scenes(40, "train", seed=0):
        out += [q for _, q, _ in annotate.sample_questions(s, rng, len(annotate.QUESTION_MAKERS))]
        out += [Caption(s.objects, v) for v in range(N_CAPTION_VARIANTS)]
    return out


MEANINGS = sample_meanings() + _annotation_meanings()


def test_languages_table():
    assert LANGUAGES == ("en", "de", "fr", "es", "ru", "ar", "zh", "ja", "sw")
    assert all(isinstance(r, Realiser) and r.code == code for code, r in REALISERS.items())


def test_samples_cover_every_meaning_type():
    assert {type(m) for m in sample_meanings()} == set(MEANING_TYPES)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_template_is_defined(lang):
    missing = [k for k in TEMPLATE_KEYS if k not in REALISERS[lang].T]
    assert not missing


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_meaning_realises(lang):
    for m in MEANINGS:
        text = realise(m, lang)
        assert isinstance(text, str) and text.strip() == text and text, m
        assert "  " not in text and "{" not in text, (m, text)


@pytest.mark.parametrize("lang", [lang for lang in LANGUAGES if lang != "en"])
def test_no_english_leaks_into_other_languages(lang):
    english = english_content_words() - SHARED_SPELLINGS.get(lang, frozenset())
    for m in MEANINGS:
        text = realise(m, lang)
        leaked = {t for t in re.findall(r"\w+", text.lower()) if t in english}
        assert not leaked, (lang, text, leaked)
        if lang in NON_LATIN:
            assert not re.search(r"[A-Za-z]", text), (lang, text)
        if lang in NO_SPACES:
            assert not re.search(r"\s", text), (lang, text)


@pytest.mark.parametrize("lang, pattern", [("ru", "[\u0400-\u04ff]"), ("ar", "[\u0600-\u06ff]"),
                                           ("zh", "[\u4e00-\u9fff]"), ("ja", "[\u3040-\u30ff]")])
def test_non_latin_languages_use_their_script(lang, pattern):
    assert all(re.search(pattern, realise(m, lang)) for m in sample_meanings() if not isinstance(m, Answer))


@pytest.mark.parametrize("lang", LANGUAGES)
def test_answers_and_caption_variants_are_distinct(lang):
    words = [realise(Answer(a), lang) for a in sorted(ALL_ANSWERS)]
    assert len(set(words)) == len(words)  # a gold answer must name one English answer
    for s in make_scenes(30, "test", seed=0):  # multi-reference captions really differ
        refs = {realise(Caption(s.objects, v), lang) for v in range(N_CAPTION_VARIANTS)}
        assert len(refs) == N_CAPTION_VARIANTS, (lang, s)


R, B = Obj("circle", "red", "large", "left"), Obj("square", "blue", "small", "right")


@pytest.mark.parametrize("meaning, lang, expected", [
    # German: gender x case x article declension
    (SExist(NP.of(R)), "de", "Es gibt einen roten Kreis."),
    (SExist(NP.of(B, size=True)), "de", "Es gibt ein kleines blaues Quadrat."),
    (SExist(NP(colour="red"), negated=True), "de", "Es gibt keine rote Figur."),
    (SRelation(NP.of(B), "right_of", NP.of(R)), "de", "Das blaue Quadrat ist rechts vom roten Kreis."),
    # French / Spanish: gender agreement, adjective position, contractions
    (SExist(NP(colour="green", size="small")), "fr", "Il y a une petite figure verte."),
    (SExist(NP(shape="circle", colour="green", size="small")), "fr", "Il y a un petit cercle vert."),
    (QShape(NP(colour="red", det="def")), "fr", "Quelle est la forme de la figure rouge ?"),
    (QShape(NP(shape="circle", colour="red")), "fr", "Quelle est la forme du cercle rouge ?"),
    (QCount(NP(colour="yellow")), "es", "¿Cuántas figuras amarillas hay?"),
    (QCount(NP(shape="square", colour="blue")), "es", "¿Cuántos cuadrados azules hay?"),
    # Russian: numerals govern case, gender picks the numeral form
    (SCount(2, NP(shape="circle", colour="red")), "ru", "На картинке два красных круга."),
    (SCount(2, NP(colour="red")), "ru", "На картинке две красные фигуры."),
    (SExist(NP.of(R), negated=True), "ru", "На картинке нет красного круга."),
    # Arabic: gender agreement, dual, gender polarity of 3, definite article on noun and adjective
    (SExist(NP.of(R)), "ar", "توجد دائرة حمراء."),
    (SExist(NP.of(B)), "ar", "يوجد مربع أزرق."),
    (SCount(2, NP(shape="circle")), "ar", "في الصورة دائرتان."),
    (SCount(3, NP(shape="square")), "ar", "في الصورة ثلاثة مربعات."),
    (SCount(3, NP(shape="circle")), "ar", "في الصورة ثلاث دوائر."),
    (SWhere(NP.of(R, det="def"), "left"), "ar", "الدائرة الحمراء على اليسار."),
    # Chinese classifier, Japanese counter
    (SCount(2, NP(shape="triangle")), "zh", "图中有两个三角形。"),
    (SCount(3, NP(shape="circle", colour="blue")), "ja", "青い円が三つあります。"),
    # Swahili noun classes: 3/4 (mduara), 9/10 (pembetatu), 7/8 (kitu)
    (SExist(NP(shape="circle", colour="red")), "sw", "Kuna mduara mwekundu."),
    (SExist(NP(shape="triangle", colour="red")), "sw", "Kuna pembetatu nyekundu."),
    (SCount(2, NP(colour="red")), "sw", "Kuna vitu vyekundu viwili."),
    (QWhere(NP(shape="triangle")), "sw", "Pembetatu iko wapi?"),
    (SSize(NP(shape="circle"), "large"), "sw", "Mduara ni mkubwa."),
])
def test_agreement(meaning, lang, expected):
    assert realise(meaning, lang) == expected


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match=r"unknown language 'xx'; the demo world realises \['en', 'de'"):
        realise(Answer("yes"), "xx")
    with pytest.raises(TypeError, match="meaning types are: NP, Caption"):
        realise("a red circle", "en")
    with pytest.raises(ValueError, match=r"Answer.value must be one of"):
        Answer("maybe")
    with pytest.raises(ValueError, match=r"NP.det must be one of"):
        NP(det="some")


# --- answers are true of the scene: an independent interpreter of question meanings ------------


def _resolve(scene, ref):
    objs = [o for o in scene.objects
            if all(v is None or getattr(o, a) == v for a, v in
                   (("shape", ref.shape), ("colour", ref.colour), ("size", ref.size), ("position", ref.position)))]
    if ref.rel:
        (anchor,) = _resolve(scene, ref.rel.anchor)
        left = ref.rel.relation == "left_of"
        objs = [o for o in objs if o != anchor and (POSITIONS.index(o.position) < POSITIONS.index(anchor.position)) == left]
    return objs


def _the(scene, ref):
    objs = _resolve(scene, ref)
    assert len(objs) == 1, f"ambiguous or empty reference {ref} in {scene}"
    return objs[0]


def _yes(b):
    return "yes" if b else "no"


def _answer(scene, q):
    col = lambda o: POSITIONS.index(o.position)  # noqa: E731
    rules = {
        QColour: lambda: _the(scene, q.ref).colour,
        QShape: lambda: _the(scene, q.ref).shape,
        QSize: lambda: _the(scene, q.ref).size,
        QWhere: lambda: _the(scene, q.ref).position,
        QCount: lambda: str(len(_resolve(scene, q.kind))),
        QExist: lambda: _yes(bool(_resolve(scene, q.np))),
        QRelation: lambda: _yes((col(_the(scene, q.a)) < col(_the(scene, q.b))) == (q.relation == "left_of")),
        QCompare: lambda: _yes(getattr(_the(scene, q.a), q.attribute) == getattr(_the(scene, q.b), q.attribute)),
        QBoth: lambda: _yes(bool(_resolve(scene, q.a)) and bool(_resolve(scene, q.b))),
    }
    return rules[type(q)]()


def test_generated_answers_are_true_and_references_unambiguous():
    rng = np.random.default_rng(1)
    seen = set()
    for s in make_scenes(300, "val", seed=1):
        for qtype, q, a in annotate.sample_questions(s, rng, 5):
            assert a.value == _answer(s, q), (s, q, a)
            assert a.value in annotate.ANSWER_VOCAB[annotate.QUESTION_TYPES[qtype][2]]
            seen.add(qtype)
    assert seen == set(annotate.QUESTION_MAKERS)


def _holds(scene, m):
    col = lambda o: POSITIONS.index(o.position)  # noqa: E731
    rules = {
        SExist: lambda: bool(_resolve(scene, m.np)) != m.negated,
        SCount: lambda: len(_resolve(scene, m.kind)) == m.n,
        SWhere: lambda: _the(scene, m.ref).position == m.position,
        SSize: lambda: _the(scene, m.ref).size == m.size,
        SRelation: lambda: (col(_the(scene, m.a)) < col(_the(scene, m.b))) == (m.relation == "left_of"),
    }
    return rules[type(m)]()


def test_nli_labels_match_the_scene():
    rng = np.random.default_rng(2)
    for s in make_scenes(200, "test", seed=2):
        for label in annotate.NLI_LABELS:
            kind, h = annotate._hypothesis(s, label, rng)
            if label == "neutral":
                assert kind == "property"
            else:
                assert _holds(s, h) == (label == "entailment"), (s, label, h)


def test_two_image_truth_values():
    a, b = make_scenes(2, "test", seed=3)
    count = lambda sc, k: len(_resolve(sc, k))  # noqa: E731
    has = lambda sc, k: count(sc, k) > 0  # noqa: E731
    rules = {
        TMore: lambda m: count(a if m.side == "left" else b, m.kind) > count(b if m.side == "left" else a, m.kind),
        TSameCount: lambda m: count(a, m.kind) == count(b, m.kind),
        TBoth: lambda m: has(a, m.np) and has(b, m.np),
        TExactlyOne: lambda m: has(a, m.np) != has(b, m.np),
        TNeither: lambda m: not has(a, m.np) and not has(b, m.np),
    }
    candidates = annotate._two_image_candidates(a, b)
    for kind, items in candidates.items():
        assert {truth for _, truth in items} <= {True, False}
        for m, truth in items:
            assert rules[type(m)](m) == truth, (kind, m)
    # a relation modifier is a noun phrase like any other
    assert realise(QColour(NP(rel=Rel("left_of", NP(shape="circle")))), "en") == \
        "What colour is the object to the left of the circle?"
