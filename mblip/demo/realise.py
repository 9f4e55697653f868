"""Per-language realisers: meaning representations -> text in 9 languages.

The demo's gold text in every language comes from here, so the whole pipeline has
references that are *correct by construction* (the "NLLB" stand-in, in contrast, is trained
on this parallel text and makes real translation errors).

Meanings are frozen dataclasses (hashable, so realisations can be cached):

    noun phrase  NP(shape, colour, size, position, rel, det)   "the red circle on the left"
    captions     Caption(objects, variant)                     3 variants: plain / with sizes / positional
                 Describe(objects)                             several sentences
    questions    QColour QShape QSize QWhere (ref: NP), QCount(kind: NP), QExist(np),
                 QRelation(a, relation, b), QCompare(attribute, a, b), QBoth(a, b)
    answers      Answer(value)  value from the closed ANSWER_VOCAB (English words, digits)
    statements   SExist SCount SAt SWhere SSize SRelation SProperty  (NLI hypotheses;
                 SProperty is "neutral": the image cannot decide "the red circle is heavy")
    two images   TMore TBoth TExactlyOne TNeither TSameCount        (MaRVL-style)

`realise(meaning, lang)` dispatches through `REALISERS[lang]`. Each language is a class
holding its lexicon (gender / noun class, plural and case forms, counters) and its templates;
the shared base class only fills templates. A template slot such as `{ref:def.dat}` asks the
language's own `np()` for a definite noun phrase in the dative: the language decides what
that means (German declines article and adjective, Russian ignores `def`, Chinese ignores
both). Grammar is simplified but consistent: one construction per meaning per language.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .world import COLOURS, POSITIONS, SHAPES, SIZES, Obj

PROPERTIES: tuple[str, ...] = ("heavy", "wooden", "new", "soft", "expensive")  # undecidable from pixels
RELATIONS: tuple[str, ...] = ("left_of", "right_of")
ATTRIBUTES: tuple[str, ...] = ("colour", "size", "shape")
DETS: tuple[str, ...] = ("def", "indef", "bare", "neg")
SIDES: tuple[str, ...] = ("left", "right")
N_CAPTION_VARIANTS = 3
MAX_COUNT = len(POSITIONS)

# Closed answer vocabularies (English; numbers as digits, which VQA normalisation also produces).
ANSWER_VOCAB: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS),
    "shape": SHAPES,
    "size": tuple(SIZES),
    "position": POSITIONS,
    "yesno": ("yes", "no"),
    "number": tuple(str(i) for i in range(MAX_COUNT + 1)),
}
ALL_ANSWERS: frozenset[str] = frozenset(a for vocab in ANSWER_VOCAB.values() for a in vocab)


def _check(owner: str, field: str, value, allowed, optional: bool = False):
    if optional and value is None:
        return
    if value not in allowed:
        raise ValueError(f"{owner}.{field} must be one of {list(allowed)}, got {value!r}")


# ----------------------------------------------------------------------------- meanings


@dataclass(frozen=True)
class Rel:
    """A relational modifier: 'to the left of <anchor>'."""

    relation: str
    anchor: "NP"

    def __post_init__(self):
        _check("Rel", "relation", self.relation, RELATIONS)


@dataclass(frozen=True)
class NP:
    """A noun phrase. shape=None is the generic noun ("object"); det is used when the NP is
    realised on its own (templates choose their own determiner)."""

    shape: str | None = None
    colour: str | None = None
    size: str | None = None
    position: str | None = None
    rel: Rel | None = None
    det: str = "indef"

    def __post_init__(self):
        _check("NP", "shape", self.shape, SHAPES, optional=True)
        _check("NP", "colour", self.colour, tuple(COLOURS), optional=True)
        _check("NP", "size", self.size, tuple(SIZES), optional=True)
        _check("NP", "position", self.position, POSITIONS, optional=True)
        _check("NP", "det", self.det, DETS)

    @classmethod
    def of(cls, obj: Obj, *, size: bool = False, det: str = "indef") -> "NP":
        """The 'colour shape' noun phrase of an object, optionally with its size."""
        return cls(shape=obj.shape, colour=obj.colour, size=obj.size if size else None, det=det)


@dataclass(frozen=True)
class Caption:
    objects: tuple[Obj, ...]
    variant: int = 0  # 0: plain list, 1: with sizes, 2: positional

    def __post_init__(self):
        _check("Caption", "variant", self.variant, range(N_CAPTION_VARIANTS))


@dataclass(frozen=True)
class Describe:
    objects: tuple[Obj, ...]


@dataclass(frozen=True)
class QColour:
    ref: NP


@dataclass(frozen=True)
class QShape:
    ref: NP


@dataclass(frozen=True)
class QSize:
    ref: NP


@dataclass(frozen=True)
class QWhere:
    ref: NP


@dataclass(frozen=True)
class QCount:
    kind: NP  # shape and/or colour; both None counts all objects


@dataclass(frozen=True)
class QExist:
    np: NP


@dataclass(frozen=True)
class QRelation:
    a: NP
    relation: str
    b: NP

    def __post_init__(self):
        _check("QRelation", "relation", self.relation, RELATIONS)


@dataclass(frozen=True)
class QCompare:
    attribute: str
    a: NP
    b: NP

    def __post_init__(self):
        _check("QCompare", "attribute", self.attribute, ATTRIBUTES)


@dataclass(frozen=True)
class QBoth:
    a: NP
    b: NP


@dataclass(frozen=True)
class Answer:
    value: str

    def __post_init__(self):
        _check("Answer", "value", self.value, sorted(ALL_ANSWERS))


@dataclass(frozen=True)
class SExist:
    np: NP
    negated: bool = False


@dataclass(frozen=True)
class SCount:
    n: int
    kind: NP

    def __post_init__(self):
        _check("SCount", "n", self.n, range(1, MAX_COUNT + 1))


@dataclass(frozen=True)
class SAt:
    """'On the left there is a large red circle.' (a sentence of a detailed description)"""

    np: NP
    position: str

    def __post_init__(self):
        _check("SAt", "position", self.position, POSITIONS)


@dataclass(frozen=True)
class SWhere:
    ref: NP
    position: str

    def __post_init__(self):
        _check("SWhere", "position", self.position, POSITIONS)


@dataclass(frozen=True)
class SSize:
    ref: NP
    size: str

    def __post_init__(self):
        _check("SSize", "size", self.size, tuple(SIZES))


@dataclass(frozen=True)
class SRelation:
    a: NP
    relation: str
    b: NP

    def __post_init__(self):
        _check("SRelation", "relation", self.relation, RELATIONS)


@dataclass(frozen=True)
class SProperty:
    ref: NP
    prop: str

    def __post_init__(self):
        _check("SProperty", "prop", self.prop, PROPERTIES)


@dataclass(frozen=True)
class TMore:
    """'The <side> image has more <kind> than the other image.'"""

    kind: NP
    side: str

    def __post_init__(self):
        _check("TMore", "side", self.side, SIDES)


@dataclass(frozen=True)
class TBoth:
    np: NP


@dataclass(frozen=True)
class TExactlyOne:
    np: NP


@dataclass(frozen=True)
class TNeither:
    np: NP


@dataclass(frozen=True)
class TSameCount:
    kind: NP


# meaning type -> name of the Realiser method that renders it
_HANDLERS: dict[type, str] = {
    NP: "r_np", Caption: "r_caption", Describe: "r_describe",
    QColour: "r_q_ref", QShape: "r_q_ref", QSize: "r_q_ref", QWhere: "r_q_ref",
    QCount: "r_q_count", QExist: "r_q_exist", QRelation: "r_q_relation", QCompare: "r_q_compare",
    QBoth: "r_q_both", Answer: "r_answer",
    SExist: "r_s_exist", SCount: "r_s_count", SAt: "r_s_at", SWhere: "r_s_where", SSize: "r_s_size",
    SRelation: "r_s_relation", SProperty: "r_s_property",
    TMore: "r_t_more", TBoth: "r_t_np", TExactlyOne: "r_t_np", TNeither: "r_t_np", TSameCount: "r_t_same",
}
MEANING_TYPES: tuple[type, ...] = tuple(_HANDLERS)
_REF_QUESTION = {QColour: "q_colour", QShape: "q_shape", QSize: "q_size", QWhere: "q_where"}
_T_NP = {TBoth: "t_both", TExactlyOne: "t_one", TNeither: "t_neither"}

# Every language must define these templates (checked by the tests).
TEMPLATE_KEYS: tuple[str, ...] = (
    "cap0", "cap1", "cap2", "cap2_item", "s_count", "s_at",
    "q_colour", "q_shape", "q_size", "q_where", "q_count", "q_exist", "q_rel",
    "q_same_colour", "q_same_size", "q_same_shape", "q_both",
    "s_exist", "s_not_exist", "s_where", "s_size", "s_rel", "s_prop",
    "t_more_left", "t_more_right", "t_both", "t_one", "t_neither", "t_same",
    "rel_left_of", "rel_right_of",
)


# ----------------------------------------------------------------------------- base


class _Slot:
    """A template value whose text depends on the format spec: '{ref:def.dat}'."""

    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn

    def __format__(self, spec: str) -> str:
        return self.fn(spec)


class Realiser:
    """Template filling shared by all languages; subclasses supply lexicon and morphology."""

    code = ""
    name = ""
    latin = True  # written in Latin script
    SENT_END = "."
    Q_START = ""
    Q_END = "?"
    SENT_SEP = " "
    JOIN = (", ", " and ")  # (separator, last separator) of a list of noun phrases
    CLAUSE_JOIN: tuple[str, str] | None = None  # for positional captions; None = JOIN
    CONTRACTIONS: tuple[tuple[str, str], ...] = ()  # regex -> replacement, e.g. French 'de le' -> 'du'
    DEFAULT_CASE = "nom"
    T: dict[str, str] = {}
    ANSWER: dict[str, str] = {}  # closed English answer -> this language's word (digits stay)
    POS: dict[str, str] = {}  # predicative position phrase ("on the left")
    POS_FRONT: dict[str, str] = {}  # sentence-initial position phrase

    # -- morphology hooks ------------------------------------------------------------
    def np(self, ref: NP, det: str, case: str) -> str:
        raise NotImplementedError

    def count(self, n: int, kind: NP, case: str) -> str:
        raise NotImplementedError

    def pred(self, category: str, value: str, ref: NP) -> str:
        """A predicative adjective ('size' or 'prop'), agreeing with `ref` where the language agrees."""
        raise NotImplementedError

    # -- shared machinery ------------------------------------------------------------
    def realise(self, meaning) -> str:
        method = _HANDLERS.get(type(meaning))
        if method is None:
            known = ", ".join(t.__name__ for t in MEANING_TYPES)
            raise TypeError(f"cannot realise {type(meaning).__name__}; meaning types are: {known}")
        return getattr(self, method)(meaning)

    def lookup(self, table: dict, key, what: str):
        try:
            return table[key]
        except KeyError:
            raise ValueError(f"{self.code}: no {what} for {key!r}; known: {list(table)}") from None

    def slot(self, ref: NP) -> _Slot:
        def fn(spec: str) -> str:
            det, case = ref.det, self.DEFAULT_CASE
            for token in filter(None, spec.split(".")):
                if token in DETS:
                    det = token
                else:
                    case = token
            return self.np(ref, det, case)

        return _Slot(fn)

    def list_slot(self, refs: list[NP]) -> _Slot:
        return _Slot(lambda spec: self.join([format(self.slot(r), spec) for r in refs]))

    def count_slot(self, n: int, kind: NP) -> _Slot:
        return _Slot(lambda spec: self.count(n, kind, spec or self.DEFAULT_CASE))

    def join(self, items: list[str], style: tuple[str, str] | None = None) -> str:
        sep, last = style or self.JOIN
        return items[0] if len(items) == 1 else sep.join(items[:-1]) + last + items[-1]

    def template(self, key: str, n: int | None = None) -> str:
        if n is not None and f"{key}#{n}" in self.T:  # number-specific variant, e.g. en 'there is' vs 'there are'
            return self.T[f"{key}#{n}"]
        return self.lookup(self.T, key, "template")

    def fill(self, key: str, n: int | None = None, **slots) -> str:
        text = self.template(key, n).format(**slots)
        for pattern, repl in self.CONTRACTIONS:
            text = re.sub(pattern, repl, text)
        return text

    def rel(self, rel: Rel) -> str:
        return self.fill("rel_" + rel.relation, b=self.slot(rel.anchor))

    @staticmethod
    def capitalise(text: str) -> str:
        return text[:1].upper() + text[1:]

    def sentence(self, text: str) -> str:
        return self.capitalise(text) + self.SENT_END

    def question(self, text: str) -> str:
        return self.Q_START + self.capitalise(text) + self.Q_END

    # -- one method per meaning type -------------------------------------------------
    def r_np(self, m: NP) -> str:
        return self.np(m, m.det, self.DEFAULT_CASE)

    def r_caption(self, m: Caption) -> str:
        if m.variant == 2:
            items = [self.fill("cap2_item", np=self.slot(NP.of(o)), pos=self.POS[o.position]) for o in m.objects]
            return self.sentence(self.fill("cap2", items=self.join(items, self.CLAUSE_JOIN)))
        key = ("cap0", "cap1")[m.variant]
        refs = [NP.of(o, size=m.variant == 1) for o in m.objects]
        return self.sentence(self.fill(key, list=self.list_slot(refs)))

    def r_describe(self, m: Describe) -> str:
        objs = m.objects
        parts = [SCount(len(objs), NP())] + [SAt(NP.of(o, size=True), o.position) for o in objs]
        if len(objs) >= 2:  # one relational sentence: leftmost vs rightmost object
            parts.append(SRelation(NP.of(objs[0], det="def"), "left_of", NP.of(objs[-1], det="def")))
        return self.SENT_SEP.join(self.realise(p) for p in parts)

    def r_q_ref(self, m) -> str:
        return self.question(self.fill(_REF_QUESTION[type(m)], ref=self.slot(m.ref)))

    def r_q_count(self, m: QCount) -> str:
        return self.question(self.fill("q_count", kind=self.slot(m.kind)))

    def r_q_exist(self, m: QExist) -> str:
        return self.question(self.fill("q_exist", np=self.slot(m.np)))

    def r_q_relation(self, m: QRelation) -> str:
        return self.question(self.fill("q_rel", a=self.slot(m.a), rel=self.rel(Rel(m.relation, m.b))))

    def r_q_compare(self, m: QCompare) -> str:
        return self.question(self.fill("q_same_" + m.attribute, a=self.slot(m.a), b=self.slot(m.b)))

    def r_q_both(self, m: QBoth) -> str:
        return self.question(self.fill("q_both", a=self.slot(m.a), b=self.slot(m.b)))

    def r_answer(self, m: Answer) -> str:
        return m.value if m.value.isdigit() else self.lookup(self.ANSWER, m.value, "answer word")

    def r_s_exist(self, m: SExist) -> str:
        return self.sentence(self.fill("s_not_exist" if m.negated else "s_exist", np=self.slot(m.np)))

    def r_s_count(self, m: SCount) -> str:
        return self.sentence(self.fill("s_count", n=m.n, count=self.count_slot(m.n, m.kind)))

    def r_s_at(self, m: SAt) -> str:
        return self.sentence(self.fill("s_at", posfront=self.POS_FRONT[m.position], np=self.slot(m.np)))

    def r_s_where(self, m: SWhere) -> str:
        return self.sentence(self.fill("s_where", ref=self.slot(m.ref), pos=self.POS[m.position]))

    def r_s_size(self, m: SSize) -> str:
        return self.sentence(self.fill("s_size", ref=self.slot(m.ref), size=self.pred("size", m.size, m.ref)))

    def r_s_relation(self, m: SRelation) -> str:
        return self.sentence(self.fill("s_rel", a=self.slot(m.a), rel=self.rel(Rel(m.relation, m.b))))

    def r_s_property(self, m: SProperty) -> str:
        return self.sentence(self.fill("s_prop", ref=self.slot(m.ref), prop=self.pred("prop", m.prop, m.ref)))

    def r_t_more(self, m: TMore) -> str:
        return self.sentence(self.fill("t_more_" + m.side, kind=self.slot(m.kind)))

    def r_t_np(self, m) -> str:
        return self.sentence(self.fill(_T_NP[type(m)], np=self.slot(m.np)))

    def r_t_same(self, m: TSameCount) -> str:
        return self.sentence(self.fill("t_same", kind=self.slot(m.kind)))


# ----------------------------------------------------------------------------- languages


class English(Realiser):
    """Cases: nom, pl. Articles a/an/the/no; size before colour before noun."""
    code, name = "en", "English"
    NOUN = {"circle": ("circle", "circles"), "square": ("square", "squares"),
            "triangle": ("triangle", "triangles"), None: ("object", "objects")}
    NUM = {1: "one", 2: "two", 3: "three"}
    PROP = {"heavy": "heavy", "wooden": "made of wood", "new": "new", "soft": "soft", "expensive": "expensive"}
    POS = {"left": "on the left", "middle": "in the middle", "right": "on the right"}
    POS_FRONT = POS
    ANSWER = {a: a for a in ALL_ANSWERS if not a.isdigit()}
    T = {
        "cap0": "{list:indef}",
        "cap1": "a picture of {list:indef}",
        "cap2": "{items}",
        "cap2_item": "{np:indef} {pos}",
        "s_count#1": "there is {count}",
        "s_count": "there are {count}",
        "s_at": "{posfront} there is {np:indef}",
        "q_colour": "what colour is {ref:def}",
        "q_shape": "what shape is {ref:def}",
        "q_size": "what size is {ref:def}",
        "q_where": "where is {ref:def}",
        "q_count": "how many {kind:bare.pl} are there",
        "q_exist": "is there {np:indef}",
        "q_rel": "is {a:def} {rel}",
        "q_same_colour": "do {a:def} and {b:def} have the same colour",
        "q_same_size": "do {a:def} and {b:def} have the same size",
        "q_same_shape": "do {a:def} and {b:def} have the same shape",
        "q_both": "are there both {a:indef} and {b:indef}",
        "s_exist": "there is {np:indef}",
        "s_not_exist": "there is {np:neg}",
        "s_where": "{ref:def} is {pos}",
        "s_size": "{ref:def} is {size}",
        "s_rel": "{a:def} is {rel}",
        "s_prop": "{ref:def} is {prop}",
        "t_more_left": "the left image has more {kind:bare.pl} than the right image",
        "t_more_right": "the right image has more {kind:bare.pl} than the left image",
        "t_both": "both images contain {np:indef}",
        "t_one": "exactly one image contains {np:indef}",
        "t_neither": "neither image contains {np:indef}",
        "t_same": "both images have the same number of {kind:bare.pl}",
        "rel_left_of": "to the left of {b:def}",
        "rel_right_of": "to the right of {b:def}",
    }

    def np(self, ref, det, case):
        noun = self.NOUN[ref.shape][case == "pl"]
        core = " ".join(w for w in (ref.size, ref.colour, noun) if w)
        article = {"def": "the", "indef": "an" if core[0] in "aeiou" else "a", "bare": "", "neg": "no"}[det]
        words = [article, core]
        if ref.position:
            words.append(self.POS[ref.position])
        if ref.rel:
            words.append(self.rel(ref.rel))
        return " ".join(w for w in words if w)

    def count(self, n, kind, case):
        return f"{self.NUM[n]} {self.np(kind, 'bare', 'nom' if n == 1 else 'pl')}"

    def pred(self, category, value, ref):
        return value if category == "size" else self.PROP[value]


class German(Realiser):
    """Cases: nom, acc, dat, pl, pldat. Three genders; weak/mixed/strong adjective endings."""
    code, name = "de", "German"
    NOUN = {"circle": ("Kreis", "Kreise", "m"), "square": ("Quadrat", "Quadrate", "n"),
            "triangle": ("Dreieck", "Dreiecke", "n"), None: ("Figur", "Figuren", "f")}
    ADJ = {"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb", "purple": "violett",
           "small": "klein", "large": "groß"}
    _INDEF = {"nom": {"m": "ein", "n": "ein", "f": "eine"}, "acc": {"m": "einen", "n": "ein", "f": "eine"},
              "dat": {"m": "einem", "n": "einem", "f": "einer"}}
    ARTICLE = {
        "def": {"nom": {"m": "der", "n": "das", "f": "die"}, "acc": {"m": "den", "n": "das", "f": "die"},
                "dat": {"m": "dem", "n": "dem", "f": "der"}},
        "indef": _INDEF,
        "neg": {case: {g: "k" + a for g, a in forms.items()} for case, forms in _INDEF.items()},
        "bare": {case: {"m": "", "n": "", "f": ""} for case in ("nom", "acc", "dat")},
    }
    # adjective endings by declension (after der / after ein, kein / no article), case, gender
    ENDING = {
        "weak": {"nom": {"m": "e", "n": "e", "f": "e"}, "acc": {"m": "en", "n": "e", "f": "e"},
                 "dat": {"m": "en", "n": "en", "f": "en"}},
        "mixed": {"nom": {"m": "er", "n": "es", "f": "e"}, "acc": {"m": "en", "n": "es", "f": "e"},
                  "dat": {"m": "en", "n": "en", "f": "en"}},
        "strong": {"nom": {"m": "er", "n": "es", "f": "e"}, "acc": {"m": "en", "n": "es", "f": "e"},
                   "dat": {"m": "em", "n": "em", "f": "er"}},
    }
    DECLENSION = {"def": "weak", "indef": "mixed", "neg": "mixed", "bare": "strong"}
    NUM = {2: "zwei", 3: "drei"}
    PROP = {"heavy": "schwer", "wooden": "aus Holz", "new": "neu", "soft": "weich", "expensive": "teuer"}
    POS = {"left": "links", "middle": "in der Mitte", "right": "rechts"}
    POS_FRONT = POS
    JOIN = (", ", " und ")
    CONTRACTIONS = ((r"\bvon dem\b", "vom"),)
    ANSWER = {"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb", "purple": "violett",
              "circle": "Kreis", "square": "Quadrat", "triangle": "Dreieck", "small": "klein", "large": "groß",
              "left": "links", "middle": "Mitte", "right": "rechts", "yes": "ja", "no": "nein"}
    T = {
        "cap0": "{list:indef.nom}",
        "cap1": "ein Bild mit {list:indef.dat}",
        "cap2": "{items}",
        "cap2_item": "{np:indef.nom} {pos}",
        "s_count": "es gibt {count:acc}",
        "s_at": "{posfront} ist {np:indef.nom}",
        "q_colour": "welche Farbe hat {ref:def.nom}",
        "q_shape": "welche Form hat {ref:def.nom}",
        "q_size": "wie groß ist {ref:def.nom}",
        "q_where": "wo ist {ref:def.nom}",
        "q_count": "wie viele {kind:bare.pl} gibt es",
        "q_exist": "gibt es {np:indef.acc}",
        "q_rel": "ist {a:def.nom} {rel}",
        "q_same_colour": "haben {a:def.nom} und {b:def.nom} die gleiche Farbe",
        "q_same_size": "haben {a:def.nom} und {b:def.nom} die gleiche Größe",
        "q_same_shape": "haben {a:def.nom} und {b:def.nom} die gleiche Form",
        "q_both": "gibt es sowohl {a:indef.acc} als auch {b:indef.acc}",
        "s_exist": "es gibt {np:indef.acc}",
        "s_not_exist": "es gibt {np:neg.acc}",
        "s_where": "{ref:def.nom} ist {pos}",
        "s_size": "{ref:def.nom} ist {size}",
        "s_rel": "{a:def.nom} ist {rel}",
        "s_prop": "{ref:def.nom} ist {prop}",
        "t_more_left": "das linke Bild hat mehr {kind:bare.pl} als das rechte Bild",
        "t_more_right": "das rechte Bild hat mehr {kind:bare.pl} als das linke Bild",
        "t_both": "beide Bilder enthalten {np:indef.acc}",
        "t_one": "genau ein Bild enthält {np:indef.acc}",
        "t_neither": "keines der beiden Bilder enthält {np:indef.acc}",
        "t_same": "beide Bilder haben gleich viele {kind:bare.pl}",
        "rel_left_of": "links von {b:def.dat}",
        "rel_right_of": "rechts von {b:def.dat}",
    }

    def np(self, ref, det, case):
        sg, pl, gender = self.NOUN[ref.shape]
        adjs = [self.ADJ[a] for a in (ref.size, ref.colour) if a]
        if case in ("pl", "pldat"):  # plural without article (after numerals, 'wie viele')
            ending = "e" if case == "pl" else "en"
            noun = pl if case == "pl" or pl.endswith("n") else pl + "n"
            words = [a + ending for a in adjs] + [noun]
        else:
            article = self.lookup(self.ARTICLE[det], case, "case")[gender]
            ending = self.ENDING[self.DECLENSION[det]][case][gender]
            words = [article] + [a + ending for a in adjs] + [sg]
        if ref.position:
            words.append(self.POS[ref.position])
        if ref.rel:
            words.append(self.rel(ref.rel))
        return " ".join(w for w in words if w)

    def count(self, n, kind, case):
        if n == 1:
            return self.np(kind, "indef", case)
        return f"{self.NUM[n]} {self.np(kind, 'bare', 'pldat' if case == 'dat' else 'pl')}"

    def pred(self, category, value, ref):
        return self.ADJ[value] if category == "size" else self.PROP[value]  # predicative: uninflected


class French(Realiser):
    """Cases: nom, pl. Size before, colour after the noun; both agree in gender and number."""
    code, name = "fr", "French"
    NOUN = {"circle": ("cercle", "m"), "square": ("carré", "m"), "triangle": ("triangle", "m"), None: ("figure", "f")}
    COLOUR = {"red": ("rouge", "rouge"), "green": ("vert", "verte"), "blue": ("bleu", "bleue"),
              "yellow": ("jaune", "jaune"), "purple": ("violet", "violette")}
    SIZE = {"small": ("petit", "petite"), "large": ("grand", "grande")}  # placed before the noun
    ARTICLE = {"def": {"m": "le", "f": "la"}, "indef": {"m": "un", "f": "une"},
               "neg": {"m": "de", "f": "de"}, "bare": {"m": "", "f": ""}}
    NUM = {2: "deux", 3: "trois"}
    PROP = {"heavy": ("lourd", "lourde"), "wooden": ("en bois", "en bois"), "new": ("neuf", "neuve"),
            "soft": ("doux", "douce"), "expensive": ("cher", "chère")}
    POS = {"left": "à gauche", "middle": "au milieu", "right": "à droite"}
    POS_FRONT = POS
    Q_END = " ?"
    JOIN = (", ", " et ")
    CONTRACTIONS = ((r"\bde le\b", "du"), (r"\bà le\b", "au"), (r"\bde les\b", "des"))
    ANSWER = {"red": "rouge", "green": "vert", "blue": "bleu", "yellow": "jaune", "purple": "violet",
              "circle": "cercle", "square": "carré", "triangle": "triangle", "small": "petit", "large": "grand",
              "left": "gauche", "middle": "milieu", "right": "droite", "yes": "oui", "no": "non"}
    T = {
        "cap0": "{list:indef}",
        "cap1": "une image avec {list:indef}",
        "cap2": "{items}",
        "cap2_item": "{np:indef} {pos}",
        "s_count": "il y a {count}",
        "s_at": "{posfront}, il y a {np:indef}",
        "q_colour": "de quelle couleur est {ref:def}",
        "q_shape": "quelle est la forme de {ref:def}",
        "q_size": "quelle est la taille de {ref:def}",
        "q_where": "où est {ref:def}",
        "q_count": "combien de {kind:bare.pl} y a-t-il",
        "q_exist": "y a-t-il {np:indef}",
        "q_rel": "est-ce que {a:def} est {rel}",
        "q_same_colour": "est-ce que {a:def} et {b:def} ont la même couleur",
        "q_same_size": "est-ce que {a:def} et {b:def} ont la même taille",
        "q_same_shape": "est-ce que {a:def} et {b:def} ont la même forme",
        "q_both": "y a-t-il à la fois {a:indef} et {b:indef}",
        "s_exist": "il y a {np:indef}",
        "s_not_exist": "il n'y a pas {np:neg}",
        "s_where": "{ref:def} est {pos}",
        "s_size": "{ref:def} est {size}",
        "s_rel": "{a:def} est {rel}",
        "s_prop": "{ref:def} est {prop}",
        "t_more_left": "l'image de gauche contient plus de {kind:bare.pl} que l'image de droite",
        "t_more_right": "l'image de droite contient plus de {kind:bare.pl} que l'image de gauche",
        "t_both": "les deux images contiennent {np:indef}",
        "t_one": "exactement une image contient {np:indef}",
        "t_neither": "aucune des deux images ne contient {np:neg}",
        "t_same": "les deux images contiennent le même nombre de {kind:bare.pl}",
        "rel_left_of": "à gauche de {b:def}",
        "rel_right_of": "à droite de {b:def}",
    }

    def np(self, ref, det, case):
        noun, gender = self.NOUN[ref.shape]
        g = gender == "f"
        plural = "s" if case == "pl" else ""
        size = self.SIZE[ref.size][g] + plural if ref.size else ""
        colour = self.COLOUR[ref.colour][g] + plural if ref.colour else ""
        article = "" if plural else self.ARTICLE[det][gender]
        words = [article, size, noun + plural, colour]
        if ref.position:
            words.append(self.POS[ref.position])
        if ref.rel:
            words.append(self.rel(ref.rel))
        return " ".join(w for w in words if w)

    def count(self, n, kind, case):
        return self.np(kind, "indef", "nom") if n == 1 else f"{self.NUM[n]} {self.np(kind, 'bare', 'pl')}"

    def pred(self, category, value, ref):
        g = self.NOUN[ref.shape][1] == "f"
        return (self.SIZE if category == "size" else self.PROP)[value][g]


class Spanish(Realiser):
    """Cases: nom, pl, howmany (cuántos/cuántas agreeing). Adjectives follow the noun."""
    code, name = "es", "Spanish"
    NOUN = {"circle": ("círculo", "m"), "square": ("cuadrado", "m"), "triangle": ("triángulo", "m"),
            None: ("figura", "f")}
    COLOUR = {"red": ("rojo", "roja"), "green": ("verde", "verde"), "blue": ("azul", "azul"),
              "yellow": ("amarillo", "amarilla"), "purple": ("morado", "morada")}
    SIZE = {"small": ("pequeño", "pequeña"), "large": ("grande", "grande")}
    ARTICLE = {"def": {"m": "el", "f": "la"}, "indef": {"m": "un", "f": "una"},
               "neg": {"m": "ningún", "f": "ninguna"}, "bare": {"m": "", "f": ""}}
    HOW_MANY = {"m": "cuántos", "f": "cuántas"}
    NUM = {2: "dos", 3: "tres"}
    PROP = {"heavy": ("pesado", "pesada"), "wooden": ("de madera", "de madera"), "new": ("nuevo", "nueva"),
            "soft": ("suave", "suave"), "expensive": ("caro", "cara")}
    POS = {"left": "a la izquierda", "middle": "en el centro", "right": "a la derecha"}
    POS_MOD = {"left": "de la izquierda", "middle": "del centro", "right": "de la derecha"}
    POS_FRONT = POS
    Q_START = "¿"
    JOIN = (", ", " y ")
    CONTRACTIONS = ((r"\bde el\b", "del"), (r"\ba el\b", "al"))
    ANSWER = {"red": "rojo", "green": "verde", "blue": "azul", "yellow": "amarillo", "purple": "morado",
              "circle": "círculo", "square": "cuadrado", "triangle": "triángulo", "small": "pequeño",
              "large": "grande", "left": "izquierda", "middle": "centro", "right": "derecha", "yes": "sí", "no": "no"}
    T = {
        "cap0": "{list:indef}",
        "cap1": "una imagen con {list:indef}",
        "cap2": "{items}",
        "cap2_item": "{np:indef} {pos}",
        "s_count": "hay {count}",
        "s_at": "{posfront} hay {np:indef}",
        "q_colour": "de qué color es {ref:def}",
        "q_shape": "qué forma tiene {ref:def}",
        "q_size": "de qué tamaño es {ref:def}",
        "q_where": "dónde está {ref:def}",
        "q_count": "{kind:bare.howmany} hay",
        "q_exist": "hay {np:indef}",
        "q_rel": "está {a:def} {rel}",
        "q_same_colour": "tienen {a:def} y {b:def} el mismo color",
        "q_same_size": "tienen {a:def} y {b:def} el mismo tamaño",
        "q_same_shape": "tienen {a:def} y {b:def} la misma forma",
        "q_both": "hay {a:indef} y también {b:indef}",
        "s_exist": "hay {np:indef}",
        "s_not_exist": "no hay {np:neg}",
        "s_where": "{ref:def} está {pos}",
        "s_size": "{ref:def} es {size}",
        "s_rel": "{a:def} está {rel}",
        "s_prop": "{ref:def} es {prop}",
        "t_more_left": "la imagen de la izquierda tiene más {kind:bare.pl} que la imagen de la derecha",
        "t_more_right": "la imagen de la derecha tiene más {kind:bare.pl} que la imagen de la izquierda",
        "t_both": "ambas imágenes contienen {np:indef}",
        "t_one": "exactamente una imagen contiene {np:indef}",
        "t_neither": "ninguna de las dos imágenes contiene {np:indef}",
        "t_same": "ambas imágenes tienen el mismo número de {kind:bare.pl}",
        "rel_left_of": "a la izquierda de {b:def}",
        "rel_right_of": "a la derecha de {b:def}",
    }

    @staticmethod
    def plural(word: str) -> str:
        return word + ("s" if word[-1] in "aeiouáéó" else "es")

    def np(self, ref, det, case):
        noun, gender = self.NOUN[ref.shape]
        g = gender == "f"
        words = [noun] + [table[v][g] for table, v in ((self.COLOUR, ref.colour), (self.SIZE, ref.size)) if v]
        if case in ("pl", "howmany"):
            words = [self.plural(w) for w in words]
            if case == "howmany":
                words.insert(0, self.HOW_MANY[gender])
        else:
            words.insert(0, self.ARTICLE[det][gender])
        if ref.position:
            words.append(self.POS_MOD[ref.position])
        if ref.rel:
            words.append(self.rel(ref.rel))
        return " ".join(w for w in words if w)

    def count(self, n, kind, case):
        return self.np(kind, "indef", "nom") if n == 1 else f"{self.NUM[n]} {self.np(kind, 'bare', 'pl')}"

    def pred(self, category, value, ref):
        g = self.NOUN[ref.shape][1] == "f"
        return (self.SIZE if category == "size" else self.PROP)[value][g]


class Russian(Realiser):
    """Cases: nom, acc, gen, pl, genpl; det is ignored (no articles). Numerals 2-3 govern the genitive."""
    code, name, latin = "ru", "Russian", False
    NOUN = {
        "circle": {"nom": "круг", "acc": "круг", "gen": "круга", "pl": "круги", "genpl": "кругов", "g": "m"},
        "square": {"nom": "квадрат", "acc": "квадрат", "gen": "квадрата", "pl": "квадраты", "genpl": "квадратов",
                   "g": "m"},
        "triangle": {"nom": "треугольник", "acc": "треугольник", "gen": "треугольника", "pl": "треугольники",
                     "genpl": "треугольников", "g": "m"},
        None: {"nom": "фигура", "acc": "фигуру", "gen": "фигуры", "pl": "фигуры", "genpl": "фигур", "g": "f"},
    }
    # adjective forms: m nom, f nom, m gen, f gen, f acc, pl nom, pl gen
    ADJ = {
        "red": ("красный", "красная", "красного", "красной", "красную", "красные", "красных"),
        "green": ("зелёный", "зелёная", "зелёного", "зелёной", "зелёную", "зелёные", "зелёных"),
        "blue": ("синий", "синяя", "синего", "синей", "синюю", "синие", "синих"),
        "yellow": ("жёлтый", "жёлтая", "жёлтого", "жёлтой", "жёлтую", "жёлтые", "жёлтых"),
        "purple": ("фиолетовый", "фиолетовая", "фиолетового", "фиолетовой", "фиолетовую", "фиолетовые",
                   "фиолетовых"),
        "small": ("маленький", "маленькая", "маленького", "маленькой", "маленькую", "маленькие", "маленьких"),
        "large": ("большой", "большая", "большого", "большой", "большую", "большие", "больших"),
    }
    # (case, gender) -> index into ADJ forms; masculine accusative = nominative (inanimate nouns)
    ADJ_FORM = {("nom", "m"): 0, ("nom", "f"): 1, ("acc", "m"): 0, ("acc", "f"): 4, ("gen", "m"): 2,
                ("gen", "f"): 3, ("pl", "m"): 5, ("pl", "f"): 5, ("genpl", "m"): 6, ("genpl", "f"): 6}
    # numerals 2-4 take the genitive singular noun; adjectives then go genitive plural (m) or nominative plural (f)
    PAUCAL_ADJ = {"m": "genpl", "f": "pl"}
    NUM = {1: {"m": "один", "f": "одна"}, 2: {"m": "два", "f": "две"}, 3: {"m": "три", "f": "три"}}
    PROP = {"heavy": ("тяжёлый", "тяжёлая"), "wooden": ("деревянный", "деревянная"), "new": ("новый", "новая"),
            "soft": ("мягкий", "мягкая"), "expensive": ("дорогой", "дорогая")}
    POS = {"left": "слева", "middle": "в центре", "right": "справа"}
    POS_FRONT = POS
    JOIN = (", ", " и ")
    ANSWER = {"red": "красный", "green": "зелёный", "blue": "синий", "yellow": "жёлтый", "purple": "фиолетовый",
              "circle": "круг", "square": "квадрат", "triangle": "треугольник", "small": "маленький",
              "large": "большой", "left": "слева", "middle": "в центре", "right": "справа", "yes": "да", "no": "нет"}
    T = {
        "cap0": "{list:nom}",
        "cap1": "на картинке {list:nom}",
        "cap2": "{items}",
        "cap2_item": "{np:nom} {pos}",
        "s_count": "на картинке {count}",
        "s_at": "{posfront} находится {np:nom}",
        "q_colour": "какого цвета {ref:nom}",
        "q_shape": "какой формы {ref:nom}",
        "q_size": "какого размера {ref:nom}",
        "q_where": "где находится {ref:nom}",
        "q_count": "сколько на картинке {kind:genpl}",
        "q_exist": "есть ли на картинке {np:nom}",
        "q_rel": "находится ли {a:nom} {rel}",
        "q_same_colour": "одинакового ли цвета {a:nom} и {b:nom}",
        "q_same_size": "одинакового ли размера {a:nom} и {b:nom}",
        "q_same_shape": "одинаковой ли формы {a:nom} и {b:nom}",
        "q_both": "есть ли на картинке и {a:nom}, и {b:nom}",
        "s_exist": "на картинке есть {np:nom}",
        "s_not_exist": "на картинке нет {np:gen}",
        "s_where": "{ref:nom} находится {pos}",
        "s_size": "{ref:nom} {size}",
        "s_rel": "{a:nom} находится {rel}",
        "s_prop": "{ref:nom} {prop}",
        "t_more_left": "на левой картинке больше {kind:genpl}, чем на правой",
        "t_more_right": "на правой картинке больше {kind:genpl}, чем на левой",
        "t_both": "на обеих картинках есть {np:nom}",
        "t_one": "ровно на одной картинке есть {np:nom}",
        "t_neither": "ни на одной картинке нет {np:gen}",
        "t_same": "на обеих картинках одинаковое количество {kind:genpl}",
        "rel_left_of": "слева от {b:gen}",
        "rel_right_of": "справа от {b:gen}",
    }

    def _adjs(self, ref, case, gender):
        index = self.lookup(self.ADJ_FORM, (case, gender), "case")
        return [self.ADJ[a][index] for a in (ref.size, ref.colour) if a]

    def np(self, ref, det, case):
        noun = self.NOUN[ref.shape]
        words = self._adjs(ref, case, noun["g"]) + [self.lookup(noun, case, "case")]
        if ref.position:
            words.append(self.POS[ref.position])
        if ref.rel:
            words.append(self.rel(ref.rel))
        return " ".join(words)

    def count(self, n, kind, case):
        noun = self.NOUN[kind.shape]
        g = noun["g"]
        if n == 1:
            return f"{self.NUM[1][g]} {self.np(kind, 'bare', 'nom')}"
        words = [self.NUM[n][g]] + self._adjs(kind, self.PAUCAL_ADJ[g], g) + [noun["gen"]]
        return " ".join(words)

    def pred(self, category, value, ref):
        g = self.NOUN[ref.shape]["g"] == "f"
        return self.ADJ[value][g] if category == "size" else self.PROP[value][g]


class Arabic(Realiser):
    """Cases: nom, pl, kam (after كم), ex (with an agreeing 'there is'). Definiteness on noun and adjectives."""
    code, name, latin = "ar", "Arabic", False
    NOUN = {
        "circle": {"sg": "دائرة", "du": "دائرتان", "pl": "دوائر", "kam": "دائرة", "g": "f"},
        "square": {"sg": "مربع", "du": "مربعان", "pl": "مربعات", "kam": "مربعا", "g": "m"},
        "triangle": {"sg": "مثلث", "du": "مثلثان", "pl": "مثلثات", "kam": "مثلثا", "g": "m"},
        None: {"sg": "جسم", "du": "جسمان", "pl": "أجسام", "kam": "جسما", "g": "m"},
    }
    # adjective forms: m, f, m dual, f dual, m accusative indefinite (after كم)
    ADJ = {
        "red": {"m": "أحمر", "f": "حمراء", "mdu": "أحمران", "fdu": "حمراوان", "mkam": "أحمر"},
        "green": {"m": "أخضر", "f": "خضراء", "mdu": "أخضران", "fdu": "خضراوان", "mkam": "أخضر"},
        "blue": {"m": "أزرق", "f": "زرقاء", "mdu": "أزرقان", "fdu": "زرقاوان", "mkam": "أزرق"},
        "yellow": {"m": "أصفر", "f": "صفراء", "mdu": "أصفران", "fdu": "صفراوان", "mkam": "أصفر"},
        "purple": {"m": "بنفسجي", "f": "بنفسجية", "mdu": "بنفسجيان", "fdu": "بنفسجيتان", "mkam": "بنفسجيا"},
        "small": {"m": "صغير", "f": "صغيرة", "mdu": "صغيران", "fdu": "صغيرتان", "mkam": "صغيرا"},
        "large": {"m": "كبير", "f": "كبيرة", "mdu": "كبيران", "fdu": "كبيرتان", "mkam": "كبيرا"},
    }
    DEF = "ال"
    REL_PRONOUN = {"m": "الذي", "f": "التي"}  # 'which (is)' after a definite noun
    EXIST = {"m": "يوجد", "f": "توجد"}  # 'there is', agreeing with the noun
    ONE = {"m": "واحد", "f": "واحدة"}
    THREE = {"m": "ثلاثة", "f": "ثلاث"}  # gender polarity: feminine numeral with masculine noun
    PROP = {"heavy": ("ثقيل", "ثقيلة"), "wooden": ("خشبي", "خشبية"), "new": ("جديد", "جديدة"),
            "soft": ("ناعم", "ناعمة"), "expensive": ("غالي", "غالية")}
    POS = {"left": "على اليسار", "middle": "في الوسط", "right": "على اليمين"}
    POS_FRONT = POS
    Q_END = "؟"
    JOIN = (" و", " و")  # the conjunction و is written attached to the next word
    ANSWER = {"red": "أحمر", "green": "أخضر", "blue": "أزرق", "yellow": "أصفر", "purple": "بنفسجي",
              "circle": "دائرة", "square": "مربع", "triangle": "مثلث", "small": "صغير", "large": "كبير",
              "left": "يسار", "middle": "وسط", "right": "يمين", "yes": "نعم", "no": "لا"}
    T = {
        "cap0": "{list:indef}",
        "cap1": "صورة فيها {list:indef}",
        "cap2": "{items}",
        "cap2_item": "{np:indef} {pos}",
        "s_count": "في الصورة {count}",
        "s_at": "{posfront} {np:indef}",
        "q_colour": "ما لون {ref:def}",
        "q_shape": "ما شكل {ref:def}",
        "q_size": "ما حجم {ref:def}",
        "q_where": "أين {ref:def}",
        "q_count": "كم {kind:bare.kam} في الصورة",
        "q_exist": "هل {np:indef.ex}",
        "q_rel": "هل {a:def} {rel}",
        "q_same_colour": "هل {a:def} و{b:def} من نفس اللون",
        "q_same_size": "هل {a:def} و{b:def} من نفس الحجم",
        "q_same_shape": "هل {a:def} و{b:def} من نفس الشكل",
        "q_both": "هل في الصورة {a:indef} و{b:indef} معا",
        "s_exist": "{np:indef.ex}",
        "s_not_exist": "لا {np:indef.ex}",
        "s_where": "{ref:def} {pos}",
        "s_size": "{ref:def} {size}",
        "s_rel": "{a:def} {rel}",
        "s_prop": "{ref:def} {prop}",
        "t_more_left": "في الصورة اليسرى {kind:bare.pl} أكثر من الصورة اليمنى",
        "t_more_right": "في الصورة اليمنى {kind:bare.pl} أكثر من الصورة اليسرى",
        "t_both": "تحتوي كلتا الصورتين على {np:indef}",
        "t_one": "تحتوي صورة واحدة فقط على {np:indef}",
        "t_neither": "لا تحتوي أي من الصورتين على {np:indef}",
        "t_same": "عدد {kind:def.pl} متساو في الصورتين",
        "rel_left_of": "على يسار {b:def}",
        "rel_right_of": "على يمين {b:def}",
    }

    def np(self, ref, det, case):
        noun = self.NOUN[ref.shape]
        g = noun["g"]
        if case == "ex":  # 'there is <np>' with the verb agreeing in gender
            return f"{self.EXIST[g]} {self.np(ref, det, 'nom')}"
        definite = det == "def"
        if case == "pl":  # non-human plurals take feminine singular adjectives
            head, form = noun["pl"], "f"
        elif case == "kam":  # 'how many' takes an indefinite accusative singular
            head, form, definite = noun["kam"], "mkam" if g == "m" else "f", False
        elif case == "nom":
            head, form = noun["sg"], g
        else:
            raise ValueError(f"ar: no case {case!r}; known: nom, pl, kam, ex")
        prefix = self.DEF if definite else ""
        words = [prefix + head] + [prefix + self.ADJ[a][form] for a in (ref.colour, ref.size) if a]
        mods = ([self.POS[ref.position]] if ref.position else []) + ([self.rel(ref.rel)] if ref.rel else [])
        if mods and definite:
            words.append(self.REL_PRONOUN[g])
        return " ".join(words + mods)

    def count(self, n, kind, case):
        noun = self.NOUN[kind.shape]
        g = noun["g"]
        adjs = (kind.colour, kind.size)
        if n == 1:
            return f"{self.np(kind, 'indef', 'nom')} {self.ONE[g]}"
        if n == 2:  # dual noun and dual adjectives
            return " ".join([noun["du"]] + [self.ADJ[a][g + "du"] for a in adjs if a])
        return " ".join([self.THREE[g], noun["pl"]] + [self.ADJ[a]["f"] for a in adjs if a])

    def pred(self, category, value, ref):
        g = self.NOUN[ref.shape]["g"]
        return self.ADJ[value][g] if category == "size" else self.PROP[value][g == "f"]


class Chinese(Realiser):
    """No spaces; indefinite = 一个; modifiers precede the noun with 的. Cases are ignored."""
    code, name, latin = "zh", "Chinese", False
    NOUN = {"circle": "圆形", "square": "正方形", "triangle": "三角形", None: "物体"}
    COLOUR = {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "purple": "紫色"}
    SIZE = {"small": "小的", "large": "大的"}
    CLASSIFIER = "个"
    NUM = {1: "一", 2: "两", 3: "三"}  # 两, not 二, before a classifier
    SIZE_PRED = {"small": "很小", "large": "很大"}
    PROP = {"heavy": "很重", "wooden": "是木头做的", "new": "是新的", "soft": "很软", "expensive": "很贵"}
    POS = {"left": "左边", "middle": "中间", "right": "右边"}
    POS_FRONT = POS
    SENT_END, Q_END, SENT_SEP = "。", "？", ""
    JOIN = ("、", "和")
    CLAUSE_JOIN = ("，", "，")
    ANSWER = {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "purple": "紫色",
              "circle": "圆形", "square": "正方形", "triangle": "三角形", "small": "小", "large": "大",
              "left": "左边", "middle": "中间", "right": "右边", "yes": "是", "no": "否"}
    T = {
        "cap0": "{list:bare}",
        "cap1": "图中有{list:indef}",
        "cap2": "{items}",
        "cap2_item": "{pos}是{np:indef}",
        "s_count": "图中有{count}",
        "s_at": "{posfront}有{np:indef}",
        "q_colour": "{ref:def}是什么颜色",
        "q_shape": "{ref:def}是什么形状",
        "q_size": "{ref:def}是大还是小",
        "q_where": "{ref:def}在哪里",
        "q_count": "图中有几个{kind:bare}",
        "q_exist": "图中有{np:indef}吗",
        "q_rel": "{a:def}在{rel}吗",
        "q_same_colour": "{a:def}和{b:def}的颜色一样吗",
        "q_same_size": "{a:def}和{b:def}的大小一样吗",
        "q_same_shape": "{a:def}和{b:def}的形状一样吗",
        "q_both": "图中既有{a:indef}又有{b:indef}吗",
        "s_exist": "图中有{np:indef}",
        "s_not_exist": "图中没有{np:bare}",
        "s_where": "{ref:def}在{pos}",
        "s_size": "{ref:def}{size}",
        "s_rel": "{a:def}在{rel}",
        "s_prop": "{ref:def}{prop}",
        "t_more_left": "左图中的{kind:bare}比右图中的多",
        "t_more_right": "右图中的{kind:bare}比左图中的多",
        "t_both": "两张图中都有{np:indef}",
        "t_one": "恰好一张图中有{np:indef}",
        "t_neither": "两张图中都没有{np:bare}",
        "t_same": "两张图中的{kind:bare}数量相同",
        "rel_left_of": "{b:def}的左边",
        "rel_right_of": "{b:def}的右边",
        "relmod_left_of": "{b:def}左边",
        "relmod_right_of": "{b:def}右边",
    }

    def np(self, ref, det, case):
        mods = ""
        if ref.position:
            mods += self.POS[ref.position] + "的"
        if ref.rel:  # '红色圆形左边的物体', not the predicative '红色圆形的左边'
            mods += self.fill("relmod_" + ref.rel.relation, b=self.slot(ref.rel.anchor)) + "的"
        quantity = self.NUM[1] + self.CLASSIFIER if det == "indef" else ""
        size = self.SIZE[ref.size] if ref.size else ""
        colour = self.COLOUR[ref.colour] if ref.colour else ""
        return mods + quantity + size + colour + self.NOUN[ref.shape]

    def count(self, n, kind, case):
        return self.NUM[n] + self.CLASSIFIER + self.np(kind, "bare", case)

    def pred(self, category, value, ref):
        return self.SIZE_PRED[value] if category == "size" else self.PROP[value]


class Japanese(Realiser):
    """No spaces; no articles; counts with the native counter つ. Cases are ignored."""
    code, name, latin = "ja", "Japanese", False
    NOUN = {"circle": "円", "square": "正方形", "triangle": "三角形", None: "物体"}
    COLOUR = {"red": "赤い", "green": "緑の", "blue": "青い", "yellow": "黄色い", "purple": "紫の"}  # attributive
    SIZE = {"small": "小さい", "large": "大きい"}
    NUM = {1: "一つ", 2: "二つ", 3: "三つ"}  # native counter つ
    PROP = {"heavy": "重いです", "wooden": "木でできています", "new": "新しいです", "soft": "柔らかいです",
            "expensive": "高価です"}
    POS = {"left": "左", "middle": "真ん中", "right": "右"}
    POS_FRONT = POS
    SENT_END, Q_END, SENT_SEP = "。", "？", ""
    JOIN = ("、", "と")
    CLAUSE_JOIN = ("、", "、")
    ANSWER = {"red": "赤", "green": "緑", "blue": "青", "yellow": "黄色", "purple": "紫",
              "circle": "円", "square": "正方形", "triangle": "三角形", "small": "小さい", "large": "大きい",
              "left": "左", "middle": "真ん中", "right": "右", "yes": "はい", "no": "いいえ"}
    T = {
        "cap0": "{list}",
        "cap1": "{list}が描かれた画像",
        "cap2": "{items}があります",
        "cap2_item": "{pos}に{np}",
        "s_count": "{count}あります",
        "s_at": "{posfront}に{np}があります",
        "q_colour": "{ref}は何色ですか",
        "q_shape": "{ref}はどんな形ですか",
        "q_size": "{ref}は大きいですか、小さいですか",
        "q_where": "{ref}はどこにありますか",
        "q_count": "{kind}はいくつありますか",
        "q_exist": "{np}はありますか",
        "q_rel": "{a}は{rel}にありますか",
        "q_same_colour": "{a}と{b}は同じ色ですか",
        "q_same_size": "{a}と{b}は同じ大きさですか",
        "q_same_shape": "{a}と{b}は同じ形ですか",
        "q_both": "{a}と{b}の両方がありますか",
        "s_exist": "{np}があります",
        "s_not_exist": "{np}はありません",
        "s_where": "{ref}は{pos}にあります",
        "s_size": "{ref}は{size}です",
        "s_rel": "{a}は{rel}にあります",
        "s_prop": "{ref}は{prop}",
        "t_more_left": "左の画像には右の画像より{kind}が多くあります",
        "t_more_right": "右の画像には左の画像より{kind}が多くあります",
        "t_both": "両方の画像に{np}があります",
        "t_one": "ちょうど一方の画像にだけ{np}があります",
        "t_neither": "どちらの画像にも{np}はありません",
        "t_same": "両方の画像で{kind}の数が同じです",
        "rel_left_of": "{b}の左",
        "rel_right_of": "{b}の右",
    }

    def np(self, ref, det, case):
        mods = ""
        if ref.rel:
            mods += self.rel(ref.rel) + "にある"
        if ref.position:
            mods += self.POS[ref.position] + "の"
        size = self.SIZE[ref.size] if ref.size else ""
        colour = self.COLOUR[ref.colour] if ref.colour else ""
        return mods + size + colour + self.NOUN[ref.shape]

    def count(self, n, kind, case):
        return self.np(kind, "bare", case) + "が" + self.NUM[n]

    def pred(self, category, value, ref):
        return self.SIZE[value] if category == "size" else self.PROP[value]


class Swahili(Realiser):
    """Cases: nom, pl, howmany, sp (subject prefix only). Every modifier agrees with the noun class."""
    code, name = "sw", "Swahili"
    # noun: singular, plural, singular class, plural class (Bantu noun classes 3/4, 9/10, 7/8)
    NOUN = {"circle": ("mduara", "miduara", 3, 4), "square": ("mraba", "miraba", 3, 4),
            "triangle": ("pembetatu", "pembetatu", 9, 10), None: ("kitu", "vitu", 7, 8)}
    # adjectives that take a class prefix, spelled out per class (prefix + stem is irregular: m+ekundu = mwekundu)
    ADJ = {
        "red": {3: "mwekundu", 4: "myekundu", 9: "nyekundu", 10: "nyekundu", 7: "chekundu", 8: "vyekundu"},
        "small": {3: "mdogo", 4: "midogo", 9: "ndogo", 10: "ndogo", 7: "kidogo", 8: "vidogo"},
        "large": {3: "mkubwa", 4: "mikubwa", 9: "kubwa", 10: "kubwa", 7: "kikubwa", 8: "vikubwa"},
        "heavy": {3: "mzito", 4: "mizito", 9: "nzito", 10: "nzito", 7: "kizito", 8: "vizito"},
        "new": {3: "mpya", 4: "mipya", 9: "mpya", 10: "mpya", 7: "kipya", 8: "vipya"},
    }
    # colours without an adjective stem are nouns joined by the associative '-a' ('of green')
    COLOUR_NOUN = {"green": "kijani", "blue": "buluu", "yellow": "njano", "purple": "zambarau"}
    ASSOC = {3: "wa", 4: "ya", 9: "ya", 10: "za", 7: "cha", 8: "vya"}
    REL_PRONOUN = {3: "ulio", 4: "iliyo", 9: "iliyo", 10: "zilizo", 7: "kilicho", 8: "vilivyo"}  # 'which is'
    SUBJECT = {3: "u", 4: "i", 9: "i", 10: "zi", 7: "ki", 8: "vi"}  # subject prefix of a verb
    HOW_MANY = {4: "mingapi", 10: "ngapi", 8: "vingapi"}
    NUM = {1: {3: "mmoja", 9: "moja", 7: "kimoja"}, 2: {4: "miwili", 10: "mbili", 8: "viwili"},
           3: {4: "mitatu", 10: "tatu", 8: "vitatu"}}
    PROP_INVARIANT = {"soft": "laini", "expensive": "ghali"}
    POS = {"left": "upande wa kushoto", "middle": "katikati", "right": "upande wa kulia"}
    POS_FRONT = POS
    JOIN = (", ", " na ")
    ANSWER = {"red": "nyekundu", "green": "kijani", "blue": "buluu", "yellow": "njano", "purple": "zambarau",
              "circle": "mduara", "square": "mraba", "triangle": "pembetatu", "small": "ndogo", "large": "kubwa",
              "left": "kushoto", "middle": "katikati", "right": "kulia", "yes": "ndiyo", "no": "hapana"}
    T = {
        "cap0": "{list}",
        "cap1": "picha yenye {list}",
        "cap2": "{items}",
        "cap2_item": "{np} {pos}",
        "s_count": "kuna {count}",
        "s_at": "{posfront} kuna {np}",
        "q_colour": "{ref} {ref:sp}na rangi gani",
        "q_shape": "{ref} {ref:sp}na umbo gani",
        "q_size": "{ref} {ref:sp}na ukubwa gani",
        "q_where": "{ref} {ref:sp}ko wapi",
        "q_count": "kuna {kind:howmany}",
        "q_exist": "je, kuna {np}",
        "q_rel": "je, {a} {a:sp}ko {rel}",
        "q_same_colour": "je, {a} na {b} vina rangi sawa",
        "q_same_size": "je, {a} na {b} vina ukubwa sawa",
        "q_same_shape": "je, {a} na {b} vina umbo sawa",
        "q_both": "je, kuna {a} na pia {b}",
        "s_exist": "kuna {np}",
        "s_not_exist": "hakuna {np}",
        "s_where": "{ref} {ref:sp}ko {pos}",
        "s_size": "{ref} ni {size}",
        "s_rel": "{a} {a:sp}ko {rel}",
        "s_prop": "{ref} ni {prop}",
        "t_more_left": "picha ya kushoto ina {kind:pl} zaidi kuliko picha ya kulia",
        "t_more_right": "picha ya kulia ina {kind:pl} zaidi kuliko picha ya kushoto",
        "t_both": "picha zote mbili zina {np}",
        "t_one": "picha moja tu ina {np}",
        "t_neither": "hakuna picha yenye {np}",
        "t_same": "picha zote mbili zina idadi sawa ya {kind:pl}",
        "rel_left_of": "kushoto mwa {b}",
        "rel_right_of": "kulia mwa {b}",
    }

    def agree(self, word: str, cls: int) -> str:
        """A modifier agreeing with noun class `cls` (adjective prefix or associative '-a')."""
        if word in self.ADJ:
            return self.ADJ[word][cls]
        return f"{self.ASSOC[cls]} {self.COLOUR_NOUN[word]}"

    def np(self, ref, det, case):
        sg, pl, cls_sg, cls_pl = self.NOUN[ref.shape]
        plural = case in ("pl", "howmany")
        cls = cls_pl if plural else cls_sg
        if case == "sp":  # only the subject prefix that a verb takes for this noun
            return self.SUBJECT[cls]
        if case not in ("nom", "pl", "howmany"):
            raise ValueError(f"sw: no case {case!r}; known: nom, pl, howmany, sp")
        words = [pl if plural else sg] + [self.agree(a, cls) for a in (ref.size, ref.colour) if a]
        if case == "howmany":
            words.append(self.HOW_MANY[cls])
        if ref.position:
            words += [self.REL_PRONOUN[cls], self.POS[ref.position]]
        if ref.rel:
            words += [self.REL_PRONOUN[cls], self.rel(ref.rel)]
        return " ".join(words)

    def count(self, n, kind, case):
        cls = self.NOUN[kind.shape][2 if n == 1 else 3]
        return f"{self.np(kind, 'bare', 'nom' if n == 1 else 'pl')} {self.NUM[n][cls]}"

    def pred(self, category, value, ref):
        cls = self.NOUN[ref.shape][2]
        if value in self.PROP_INVARIANT:
            return self.PROP_INVARIANT[value]
        if value == "wooden":
            return f"{self.ASSOC[cls]} mbao"
        return self.ADJ[value][cls]


REALISERS: dict[str, Realiser] = {
    r.code: r for r in (English(), German(), French(), Spanish(), Russian(), Arabic(), Chinese(), Japanese(), Swahili())
}
LANGUAGES: tuple[str, ...] = tuple(REALISERS)

# Words the tests accept in another language although they are also English lexicon words:
# real cognates with identical spelling, not leaks.
SHARED_SPELLINGS: dict[str, frozenset[str]] = {"fr": frozenset({"triangle", "triangles"})}


def get_realiser(lang: str) -> Realiser:
    try:
        return REALISERS[lang]
    except KeyError:
        raise ValueError(f"unknown language {lang!r}; the demo world realises {list(LANGUAGES)}") from None


def realise(meaning, lang: str) -> str:
    """Text of `meaning` in language `lang` (one of LANGUAGES)."""
    return get_realiser(lang).realise(meaning)


def english_content_words() -> frozenset[str]:
    """The English lexicon's content words (colours, shapes, sizes, positions, nouns, properties)."""
    en = REALISERS["en"]
    words = set(COLOURS) | set(SHAPES) | set(SIZES) | set(POSITIONS) | {"object", "objects"}
    words |= {w for forms in en.NOUN.values() for w in forms}
    words |= {w for phrase in en.PROP.values() for w in phrase.split()} - {"of"}
    return frozenset(words)


def sample_meanings() -> list:
    """At least one instance of every meaning type, with every optional part exercised
    (used by tests and handy for eyeballing a new language)."""
    a = Obj("circle", "red", "large", "left")
    b = Obj("square", "blue", "small", "middle")
    c = Obj("triangle", "yellow", "small", "right")
    red_circle, blue_square = NP.of(a, det="def"), NP.of(b, det="def")
    refs = [
        NP(shape="circle"),
        NP(colour="green"),
        NP(shape="triangle", size="large"),
        NP(shape="square", position="right"),
        NP(colour="purple", position="middle"),
        NP(rel=Rel("left_of", red_circle)),
        NP(rel=Rel("right_of", NP(shape="triangle", colour="purple"))),
    ]
    out: list = [NP.of(a, det=d) for d in DETS] + [NP.of(b, size=True, det="bare")]
    out += [Caption(objs, v) for objs in ((a,), (a, b), (a, b, c)) for v in range(N_CAPTION_VARIANTS)]
    out += [Describe((b,)), Describe((a, b, c))]
    for ref in refs:
        out += [QColour(ref), QShape(ref), QSize(ref), QWhere(ref), SProperty(ref, "heavy")]
    kinds = [NP(), NP(shape="circle"), NP(colour="red"), NP(shape="triangle", colour="purple"),
             NP(shape="square", colour="green")]
    for kind in kinds:
        out += [QCount(kind), TSameCount(kind)] + [TMore(kind, s) for s in SIDES]
        out += [SCount(n, kind) for n in range(1, MAX_COUNT + 1)]
    for np_ in (NP.of(a), NP.of(b, size=True), NP(colour="purple"), NP(shape="triangle")):
        out += [QExist(np_), SExist(np_), SExist(np_, negated=True), TBoth(np_), TExactlyOne(np_), TNeither(np_)]
        out += [SAt(np_, p) for p in POSITIONS]
    for rel in RELATIONS:
        out += [QRelation(red_circle, rel, blue_square), SRelation(blue_square, rel, red_circle)]
    out += [QCompare(attr, NP(shape="circle"), NP(shape="square", position="right")) for attr in ATTRIBUTES]
    out += [QBoth(NP.of(a), NP.of(c)), QBoth(NP(shape="square"), NP(colour="blue", shape="circle"))]
    out += [SWhere(red_circle, p) for p in POSITIONS] + [SSize(r, s) for r in refs[:3] for s in SIZES]
    out += [SProperty(blue_square, p) for p in PROPERTIES] + [SProperty(NP(colour="red"), p) for p in PROPERTIES]
    out += [Answer(v) for v in sorted(ALL_ANSWERS)]
    return out


__all__ = [
    "ANSWER_VOCAB", "ALL_ANSWERS", "ATTRIBUTES", "DETS", "LANGUAGES", "MEANING_TYPES", "N_CAPTION_VARIANTS",
    "PROPERTIES", "REALISERS", "RELATIONS", "SIDES", "TEMPLATE_KEYS", "Realiser", "realise", "get_realiser",
    "english_content_words", "sample_meanings", "NP", "Rel", "Caption", "Describe", "QColour", "QShape", "QSize",
    "QWhere", "QCount", "QExist", "QRelation", "QCompare", "QBoth", "Answer", "SExist", "SCount", "SAt", "SWhere",
    "SSize", "SRelation", "SProperty", "TMore", "TBoth", "TExactlyOne", "TNeither", "TSameCount",
]
