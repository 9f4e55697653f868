"""Annotations of demo scenes for every task of the paper's task mix and its evaluations.

Each generator is a pure function of (scenes, seed): it draws its choices from its own
RNG stream (seed + task name) and realises every meaning in English and in each requested
language. A record is

    {"id", "image", "task", "en": {field: text}, "gold": {lang: {field: text}}, ["meta"], ["label"]}

Train-mix tasks (`TRAIN_TASKS`, text fields in `TASK_FIELDS`):

    caption   all 3 caption variants of a scene (plain / with sizes / positional)
    vqa       `VQA_PER_SCENE` questions per scene with short answers, question types drawn
              without repetition from QUESTION_TYPES (attribute, count, existence, relational,
              comparison, conjunction)
    vqg       the same (question, answer) pairs as vqa; the model generates the question
    match     a caption and yes/no; negatives change exactly one attribute of one object
              (colour or shape; size in the sized variant; column in the positional one);
              exactly half of the scenes get a negative
    classify  'colour shape' of the main object, only for scenes that have one: a single object,
              or exactly one large object (otherwise 'main object' would be a guess)
    verify    'colour shape' + yes/no; negatives differ from a present object in colour or
              shape and are absent from the scene; exactly half are negative
    describe  several sentences: object count, each object with size and column, one relation

Evaluation analogues: `gqa` (questions in every language, answers English), `nli`
(one entailment, one contradiction and one neutral hypothesis per scene: exactly balanced),
`two_image` (statements about scene pairs, exactly half true), `multi_ref_captions`.

Closed answer vocabularies (`realise.ANSWER_VOCAB`): colour {red, green, blue, yellow, purple},
shape {circle, square, triangle}, size {small, large}, position {left, middle, right},
yes/no, number {0, 1, 2, 3}. English answers are these words; other languages realise them
(digits stay digits).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np

from .realise import (
    ANSWER_VOCAB, ATTRIBUTES, LANGUAGES, N_CAPTION_VARIANTS, PROPERTIES, RELATIONS, SIDES, NP, Answer, Caption,
    Describe, QBoth, QColour, QCompare, QCount, QExist, QRelation, QShape, QSize, QWhere, Rel, SCount, SExist,
    SProperty, SRelation, SSize, SWhere, TBoth, TExactlyOne, TMore, TNeither, TSameCount, get_realiser,
)
from .world import COLOURS, POSITIONS, SHAPES, SIZES, Obj, Scene, stable_hash

TRAIN_TASKS: tuple[str, ...] = ("caption", "vqa", "vqg", "match", "classify", "verify", "describe")
TASK_FIELDS: dict[str, tuple[str, ...]] = {
    "caption": ("caption",),
    "vqa": ("question", "answer"),
    "vqg": ("answer", "question"),
    "match": ("caption", "label"),
    "classify": ("label",),
    "verify": ("object", "label"),
    "describe": ("description",),
    "gqa": ("question", "answer"),
    "nli": ("premise", "hypothesis"),
    "two_image": ("statement",),
}
VQA_PER_SCENE = 3
GQA_PER_SCENE = 4
NLI_LABELS: tuple[str, ...] = ("entailment", "contradiction", "neutral")

# GQA's type annotations for each question type: (structural, semantic, answer vocabulary)
QUESTION_TYPES: dict[str, tuple[str, str, str]] = {
    "colour": ("query", "attr", "colour"),
    "shape": ("query", "attr", "shape"),
    "size": ("query", "attr", "size"),
    "where": ("query", "rel", "position"),
    "count": ("query", "obj", "number"),
    "exist": ("verify", "obj", "yesno"),
    "relation": ("verify", "rel", "yesno"),
    "rel_colour": ("query", "rel", "colour"),
    "rel_shape": ("query", "rel", "shape"),
    "compare": ("compare", "attr", "yesno"),
    "both": ("logical", "obj", "yesno"),
}


def image_path(scene_id: str) -> str:
    """Where build_world writes a scene's image, relative to the world directory."""
    return f"images/{scene_id}.png"


def _rng(seed: int, stream: str) -> np.random.Generator:
    return np.random.default_rng([seed, stable_hash("annotate:" + stream)])


def _pick(rng: np.random.Generator, items: Sequence):
    return items[int(rng.integers(len(items)))]


def _coin(rng: np.random.Generator) -> bool:
    return bool(rng.integers(2))


def _balanced(rng: np.random.Generator, n: int, values: Sequence) -> list:
    """n labels cycling through `values` (counts differ by at most one), in random order."""
    labels = [values[i % len(values)] for i in range(n)]
    return [labels[i] for i in rng.permutation(n)]


class _Texts:
    """Realises meanings in English and the requested languages, caching repeated meanings."""

    def __init__(self, languages: Sequence[str]):
        self.realisers = {lang: get_realiser(lang) for lang in dict.fromkeys(["en", *languages])}
        self.languages = tuple(languages)
        self.cache: dict = {}

    def text(self, meaning, lang: str) -> str:
        key = (meaning, lang)
        if key not in self.cache:
            self.cache[key] = self.realisers[lang].realise(meaning)
        return self.cache[key]

    def record(self, rid: str, image: str, task: str, fields: dict, **extra) -> dict:
        rec = {
            "id": rid,
            "image": image,
            "task": task,
            "en": {f: self.text(m, "en") for f, m in fields.items()},
            "gold": {lang: {f: self.text(m, lang) for f, m in fields.items()} for lang in self.languages},
        }
        rec.update({k: v for k, v in extra.items() if v is not None})
        return rec


# ----------------------------------------------------------------------------- scene logic


def matches(obj: Obj, ref: NP) -> bool:
    """Does `obj` fit the attributes a (relation-free) noun phrase names?"""
    return all(
        want is None or getattr(obj, attr) == want
        for attr, want in (("shape", ref.shape), ("colour", ref.colour), ("size", ref.size), ("position", ref.position))
    )


def contains(scene: Scene, ref: NP) -> bool:
    return any(matches(o, ref) for o in scene.objects)


def count(scene: Scene, ref: NP) -> int:
    return sum(matches(o, ref) for o in scene.objects)


def refer(scene: Scene, obj: Obj, rng: np.random.Generator, exclude: Sequence[str] = ()) -> NP:
    """A shortest definite description that picks out `obj` alone, not using `exclude`d
    attributes (a question about colour must not name the colour)."""
    usable = [a for a in ("shape", "colour", "size", "position") if a not in exclude]
    for k in range(len(usable) + 1):
        unique = []
        for attrs in itertools.combinations(usable, k):
            ref = NP(det="def", **{a: getattr(obj, a) for a in attrs})
            if count(scene, ref) == 1:
                unique.append(ref)
        if unique:
            return _pick(rng, unique)
    raise AssertionError(f"{scene.id}: no unique description of {obj} without {list(exclude)}")


def absent_variant(scene: Scene, obj: Obj, rng: np.random.Generator, with_size: bool = False) -> NP:
    """'colour shape' of `obj` with exactly one attribute changed so that nothing in the scene fits."""
    base = NP.of(obj, size=with_size)
    by_attr = {}  # pick the attribute first, so colour (4 alternatives) does not crowd out shape (2)
    for attr, values in (("colour", tuple(COLOURS)), ("shape", SHAPES), ("size", tuple(SIZES))):
        if getattr(base, attr) is None:
            continue
        cands = [NP(**{**_np_fields(base), attr: v}) for v in values if v != getattr(obj, attr)]
        cands = [c for c in cands if not contains(scene, c)]
        if cands:
            by_attr[attr] = cands
    return _pick(rng, by_attr[_pick(rng, sorted(by_attr))])  # never empty: 5 colours x 3 shapes > 3 objects


def _np_fields(ref: NP) -> dict:
    return {"shape": ref.shape, "colour": ref.colour, "size": ref.size, "det": ref.det}


def _yes(truth: bool) -> Answer:
    return Answer("yes" if truth else "no")


# ----------------------------------------------------------------------------- questions


def _q_attr(attr: str, question: type, answer_of: Callable[[Obj], str]):
    def make(scene, rng):
        obj = _pick(rng, scene.objects)
        return question(refer(scene, obj, rng, exclude=(attr,))), Answer(answer_of(obj))

    return make


def _q_count(scene, rng):
    # all objects / a kind that is present / any kind: keeps answers from collapsing onto 0 and 1
    obj = _pick(rng, scene.objects)
    group = [
        [NP()],
        [NP(shape=obj.shape), NP(colour=obj.colour)],
        [NP(shape=s) for s in SHAPES] + [NP(colour=c) for c in COLOURS],
    ][int(rng.choice(3, p=[0.4, 0.35, 0.25]))]
    kind = _pick(rng, group)
    return QCount(kind), Answer(str(count(scene, kind)))


def _q_exist(scene, rng):
    obj = _pick(rng, scene.objects)
    sized = rng.random() < 0.3
    target = NP.of(obj, size=sized) if _coin(rng) else absent_variant(scene, obj, rng, with_size=sized)
    return QExist(target), _yes(contains(scene, target))


def _q_relation(scene, rng):
    if len(scene.objects) < 2:
        return None
    a, b = (scene.objects[i] for i in rng.choice(len(scene.objects), size=2, replace=False))
    relation = _pick(rng, RELATIONS)
    truth = (a.column < b.column) == (relation == "left_of")
    ra, rb = refer(scene, a, rng, exclude=("position",)), refer(scene, b, rng, exclude=("position",))
    return QRelation(ra, relation, rb), _yes(truth)


def _q_rel_attr(attr: str, question: type):
    def make(scene, rng):
        options = []  # (relation, anchor, target) where target is the only object on that side
        for anchor in scene.objects:
            for relation in RELATIONS:
                side = [o for o in scene.objects if (o.column < anchor.column) == (relation == "left_of") and o != anchor]
                if len(side) == 1:
                    options.append((relation, anchor, side[0]))
        if not options:
            return None
        relation, anchor, target = _pick(rng, options)
        ref = NP(det="def", rel=Rel(relation, refer(scene, anchor, rng, exclude=("position",))))
        return question(ref), Answer(getattr(target, attr))

    return make


def _q_compare(scene, rng):
    if len(scene.objects) < 2:
        return None
    a, b = (scene.objects[i] for i in rng.choice(len(scene.objects), size=2, replace=False))
    attr = _pick(rng, ATTRIBUTES)
    ra, rb = refer(scene, a, rng, exclude=(attr,)), refer(scene, b, rng, exclude=(attr,))
    return QCompare(attr, ra, rb), _yes(getattr(a, attr) == getattr(b, attr))


def _q_both(scene, rng):
    truth = _coin(rng)
    if truth and len(scene.objects) < 2:
        return None  # 'both X and Y' needs two objects; let another question type take the slot
    if truth:
        a, b = (scene.objects[i] for i in rng.choice(len(scene.objects), size=2, replace=False))
        return QBoth(NP.of(a), NP.of(b)), Answer("yes")
    obj = _pick(rng, scene.objects)
    present, absent = NP.of(obj), absent_variant(scene, obj, rng)
    pair = (present, absent) if _coin(rng) else (absent, present)
    return QBoth(*pair), Answer("no")


QUESTION_MAKERS: dict[str, Callable] = {
    "colour": _q_attr("colour", QColour, lambda o: o.colour),
    "shape": _q_attr("shape", QShape, lambda o: o.shape),
    "size": _q_attr("size", QSize, lambda o: o.size),
    "where": _q_attr("position", QWhere, lambda o: o.position),
    "count": _q_count,
    "exist": _q_exist,
    "relation": _q_relation,
    "rel_colour": _q_rel_attr("colour", QColour),
    "rel_shape": _q_rel_attr("shape", QShape),
    "compare": _q_compare,
    "both": _q_both,
}


def sample_questions(scene: Scene, rng: np.random.Generator, k: int) -> list[tuple[str, object, Answer]]:
    """Up to k (question type, question, answer) for a scene, with k distinct question types."""
    out = []
    for qtype in (list(QUESTION_MAKERS)[i] for i in rng.permutation(len(QUESTION_MAKERS))):
        qa = QUESTION_MAKERS[qtype](scene, rng)
        if qa is not None:
            out.append((qtype, *qa))
        if len(out) == k:
            break
    return out


def _question_meta(qtype: str) -> dict:
    structural, semantic, vocab = QUESTION_TYPES[qtype]
    return {"qtype": qtype, "structural": structural, "semantic": semantic, "answer_type": vocab}


# ----------------------------------------------------------------------------- train-mix tasks


def captions(scenes: Sequence[Scene], seed: int, languages: Sequence[str] = LANGUAGES) -> list[dict]:
    t = _Texts(languages)
    return [
        t.record(f"{s.id}-caption{v}", image_path(s.id), "caption", {"caption": Caption(s.objects, v)},
                 meta={"variant": v})
        for s in scenes for v in range(N_CAPTION_VARIANTS)
    ]


def _vqa_pairs(scenes: Sequence[Scene], seed: int):
    rng = _rng(seed, "vqa")  # vqg reuses this stream: same pairs
    return [(s, i, qa) for s in scenes for i, qa in enumerate(sample_questions(s, rng, VQA_PER_SCENE))]


def vqa(scenes: Sequence[Scene], seed: int, languages: Sequence[str] = LANGUAGES) -> list[dict]:
    t = _Texts(languages)
    return [
        t.record(f"{s.id}-vqa{i}", image_path(s.id), "vqa", {"question": q, "answer": a}, meta=_question_meta(qtype))
        for s, i, (qtype, q, a) in _vqa_pairs(scenes, seed)
    ]


def vqg(scenes: Sequence[Scene], seed: int, languages: Sequence[str] = LANGUAGES) -> list[dict]:
    t = _Texts(languages)
    return [
        t.record(f"{s.id}-vqg{i}", image_path(s.id), "vqg", {"answer": a, "question": q}, meta=_question_meta(qtype))
        for s, i, (qtype, q, a) in _vqa_pairs(scenes, seed)
    ]


def _mutate(scene: Scene, rng: np.random.Generator, attrs: Sequence[str]) -> tuple[tuple[Obj, ...], str]:
    """The scene's objects with exactly one attribute of one object changed (still a valid scene)."""
    by_attr: dict[str, list] = {}  # attribute first, then object and value (see absent_variant)
    taken = {(o.colour, o.shape) for o in scene.objects}
    values = {"colour": tuple(COLOURS), "shape": SHAPES, "size": tuple(SIZES),
              "position": [p for p in POSITIONS if scene.at(p) is None]}
    for attr in attrs:
        for i, obj in enumerate(scene.objects):
            for v in values[attr]:
                new = Obj(**{**obj.__dict__, attr: v})
                if v != getattr(obj, attr) and ((new.colour, new.shape) not in taken or attr in ("size", "position")):
                    by_attr.setdefault(attr, []).append((i, new))
    attr = _pick(rng, sorted(by_attr))
    i, new = _pick(rng, by_attr[attr])
    objects = tuple(sorted(scene.objects[:i] + (new,) + scene.objects[i + 1:], key=lambda o: o.column))
    return objects, attr


# attributes a caption variant shows, hence the ones a hard negative may change
_VARIANT_ATTRS = {0: ("colour", "shape"), 1: ("colour", "shape", "size"), 2: ("colour", "shape", "position")}


def match(scenes: Sequence[Scene], seed: int, languages: Sequence[str] = LANGUAGES) -> list[dict]:
    rng = _rng(seed, "match")
    t = _Texts(languages)
    out = []
    for s, positive in zip(scenes, _balanced(rng, len(scenes), (True, False))):
        variant = int(rng.integers(N_CAPTION_VARIANTS))
        objects, changed = (s.objects, None) if positive else _mutate(s, rng, _VARIANT_ATTRS[variant])
        fields = {"caption": Caption(objects, variant), "label": _yes(positive)}
        out.append(t.record(f"{s.id}-match", image_path(s.id), "match", fields,
                            meta={"variant": variant, "changed": changed}))
    return out


def main_object(scene: Scene) -> Obj | None:
    """The object a classification label names: the only object, or the only large one."""
    large = [o for o in scene.objects if o.size == "large"]
    if len(scene.objects) == 1:
        return scene.objects[0]
    return large[0] if len(large) == 1 else None


def classify(scenes: Sequence[Scene], seed: int, languages: Sequence[str] = LANGUAGES) -> list[dict]:
    t = _Texts(languages)
    return [
        t.record(f"{s.id}-classify", image_path(s.id), "classify", {"label": NP.of(obj, det="bare")})
        for s in scenes if (obj := main_object(s)) is not None
    ]


def verify(scenes: Sequence[Scene], seed: int, languages: Sequence[str] = LANGUAGES) -> list[dict]:
    rng = _rng(seed, "verify")
    t = _Texts(languages)
    out = []
    for s, positive in zip(scenes, _balanced(rng, len(scenes), (True, False))):
        obj = _pick(rng, s.objects)
        target = NP.of(obj, det="bare") if positive else absent_variant(s, obj, rng)
        target = NP(shape=target.shape, colour=target.colour, det="bare")
        out.append(t.record(f"{s.id}-verify", image_path(s.id), "verify", {"object": target, "label": _yes(positive)}))
    return out


def describe(scenes: Sequence[Scene], seed: int, languages: Sequence[str] = LANGUAGES) -> list[dict]:
    t = _Texts(languages)
    return [t.record(f"{s.id}-describe", image_path(s.id), "describe", {"description": Describe(s.objects)})
            for s in scenes]


TRAIN_GENERATORS: dict[str, Callable] = {
    "caption": captions, "vqa": vqa, "vqg": vqg, "match": match,
    "classify": classify, "verify": verify, "describe": describe,
}


# ----------------------------------------------------------------------------- evaluation analogues


def gqa(scenes: Sequence[Scene], seed: int, languages: Sequence[str] = LANGUAGES) -> list[dict]:
    """GQA-style questions (incl. relational and compositional ones) with English answers."""
    rng = _rng(seed, "gqa")
    t = _Texts(languages)
    return [
        t.record(f"{s.id}-q{i}", image_path(s.id), "gqa", {"question": q, "answer": a}, meta=_question_meta(qtype),
                 scene=s.id)
        for s in scenes for i, (qtype, q, a) in enumerate(sample_questions(s, rng, GQA_PER_SCENE))
    ]


def _hypothesis(scene: Scene, label: str, rng: np.random.Generator):
    """One hypothesis about `scene` with the given NLI label (and the kind of claim it makes)."""
    if label == "neutral":  # a property pixels cannot show
        return "property", SProperty(NP.of(_pick(rng, scene.objects), det="def"), _pick(rng, PROPERTIES))
    true = label == "entailment"
    obj = _pick(rng, scene.objects)
    ref = NP.of(obj, det="def")
    kinds = ["exist", "not_exist", "count", "where", "size"] + (["relation"] if len(scene.objects) > 1 else [])
    kind = _pick(rng, kinds)
    if kind in ("exist", "not_exist"):
        negated = kind == "not_exist"
        target = NP.of(obj, size=_coin(rng)) if true != negated else absent_variant(scene, obj, rng)
        return kind, SExist(target, negated=negated)
    if kind == "count":
        kind_np = _pick(rng, [NP(), NP(shape=obj.shape), NP(colour=obj.colour)])
        n = count(scene, kind_np)
        return kind, SCount(n if true else _pick(rng, [m for m in (1, 2, 3) if m != n]), kind_np)
    if kind == "where":
        return kind, SWhere(ref, obj.position if true else _pick(rng, [p for p in POSITIONS if p != obj.position]))
    if kind == "size":
        return kind, SSize(ref, obj.size if true else _pick(rng, [z for z in SIZES if z != obj.size]))
    other = _pick(rng, [o for o in scene.objects if o != obj])
    relation = _pick(rng, RELATIONS)
    holds = (obj.column < other.column) == (relation == "left_of")
    if holds != true:
        relation = RELATIONS[1 - RELATIONS.index(relation)]
    return kind, SRelation(ref, relation, NP.of(other, det="def"))


def nli(scenes: Sequence[Scene], seed: int, languages: Sequence[str] = LANGUAGES) -> list[dict]:
    """One hypothesis per label per scene; premise = the scene's plain caption."""
    rng = _rng(seed, "nli")
    t = _Texts(languages)
    out = []
    for s in scenes:
        for label in NLI_LABELS:
            kind, hypothesis = _hypothesis(s, label, rng)
            out.append(t.record(f"{s.id}-nli-{label[0]}", image_path(s.id), "nli",
                                {"premise": Caption(s.objects, 0), "hypothesis": hypothesis},
                                label=label, meta={"kind": kind}, scene=s.id))
    return out


def _two_image_candidates(left: Scene, right: Scene) -> dict[str, list[tuple[object, bool]]]:
    kinds = [NP()] + [NP(shape=s) for s in SHAPES] + [NP(colour=c) for c in COLOURS]
    nps = [NP(colour=c, shape=s) for c in COLOURS for s in SHAPES] + kinds[1:]
    scenes = {"left": left, "right": right}
    out: dict[str, list] = {"more": [], "both": [], "exactly_one": [], "neither": [], "same_count": []}
    for kind in kinds:
        for side in SIDES:
            other = SIDES[1 - SIDES.index(side)]
            out["more"].append((TMore(kind, side), count(scenes[side], kind) > count(scenes[other], kind)))
        out["same_count"].append((TSameCount(kind), count(left, kind) == count(right, kind)))
    for np_ in nps:
        hits = contains(left, np_) + contains(right, np_)
        out["both"].append((TBoth(np_), hits == 2))
        out["exactly_one"].append((TExactlyOne(np_), hits == 1))
        out["neither"].append((TNeither(np_), hits == 0))
    return out


def two_image(scenes: Sequence[Scene], seed: int, languages: Sequence[str] = LANGUAGES,
              n_items: int | None = None) -> list[dict]:
    """MaRVL/NLVR2-style statements over scene pairs, exactly half true.

    Pair i is (scenes[p[i]], scenes[p[i+1]]) for a random cyclic order p, so every scene
    appears twice, once on each side."""
    if len(scenes) < 2:
        raise ValueError(f"two_image needs at least 2 scenes to pair, got {len(scenes)}")
    rng = _rng(seed, "two_image")
    t = _Texts(languages)
    n_items = len(scenes) if n_items is None else n_items
    order = rng.permutation(len(scenes))
    out = []
    for i, target in enumerate(_balanced(rng, n_items, (True, False))):
        left, right = scenes[order[i % len(scenes)]], scenes[order[(i + 1) % len(scenes)]]
        candidates = _two_image_candidates(left, right)
        kinds = [k for k in candidates if any(truth == target for _, truth in candidates[k])]
        kind = _pick(rng, kinds)  # 'more' always has a false and 'neither' a true candidate
        statement = _pick(rng, [m for m, truth in candidates[kind] if truth == target])
        out.append(t.record(f"pair-{left.id}-{right.id}-{i}", image_path(left.id), "two_image",
                            {"statement": statement}, label=target, left=left.id, right=right.id,
                            meta={"kind": kind}))
    return out


def multi_ref_captions(scenes: Sequence[Scene], seed: int, languages: Sequence[str] = LANGUAGES) -> list[dict]:
    """All caption variants of each scene as references, per language (XM3600 style)."""
    t = _Texts(languages)
    return [
        {"id": s.id, "image": image_path(s.id), "task": "captions",
         "en": [t.text(Caption(s.objects, v), "en") for v in range(N_CAPTION_VARIANTS)],
         "gold": {lang: [t.text(Caption(s.objects, v), lang) for v in range(N_CAPTION_VARIANTS)]
                  for lang in t.languages}}
        for s in scenes
    ]


__all__ = [
    "ANSWER_VOCAB", "GQA_PER_SCENE", "NLI_LABELS", "QUESTION_TYPES", "TASK_FIELDS", "TRAIN_GENERATORS",
    "TRAIN_TASKS", "VQA_PER_SCENE", "captions", "classify", "describe", "gqa", "image_path", "main_object",
    "match", "multi_ref_captions", "nli", "refer", "sample_questions", "two_image", "verify", "vqa", "vqg",
]
