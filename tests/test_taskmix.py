"""The task mix: language assignment per task, the protocol's templates and translation rules, the English-only
ablation. Uses a small rendered world and a marker 'translator' so every translated string is visible."""
import math
from collections import Counter

import pytest

from mblip import languages as L
from mblip import taskmix as M
from mblip import templates as T
from mblip.demo.build import build_world

LANGS = ["en", "de", "ru", "zh", "sw"]
TASKS = ["caption", "vqa", "vqg", "match", "classify", "verify", "describe"]


def tr(text, lang):
    return text if lang == "en" else f"<{lang}>{text}"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("w")
    build_world(d, n_train=200, n_val=4, n_test=4, image_size=32, max_objects=3, seed=3, languages=LANGS)
    return M.load_english(d, "train", TASKS)


def mix(world, translated=True, assignment="temperature", seed=7):
    assigned = {t: M.assign(t, len(r), LANGS, assignment, 10.0, seed, translated) for t, r in world.items()}
    answers = sorted(M._answers_in(world["vqa"]))
    labels = {l: M.label_dictionary(answers, l, tr, None) for l in LANGS if l != "en"}
    return assigned, M.build(world, assigned, tr, labels, seed)


def test_each_task_gets_floor_n_p_examples_per_language(world):
    assigned, recs = mix(world)
    share = L.shares(LANGS, "temperature", 10.0)
    got = M.counts(recs)
    for task, rows in world.items():
        expect = {c: math.floor(len(rows) * p / 100) for c, p in share.items()}
        assert got[task] == {c: n for c, n in expect.items() if n}, task
    # VQA and VQG are shuffled separately: the same question rarely has the same language in both
    same = sum(a == b for a, b in zip(assigned["vqa"], assigned["vqg"]))
    assert same < 0.6 * len(assigned["vqa"])


def test_templates_and_translation_rules_follow_the_protocol(world):
    _, recs = mix(world)
    by = lambda task: [r for r in recs if r["task"] == task]
    names = {c: L.get(c).name for c in LANGS}
    for r in by("caption"):
        allowed = [t.format(names[r["lang"]]) for t in T.CAPTION_TEMPLATES_LANG]
        allowed += list(T.CAPTION_TEMPLATES_EN) if r["lang"] == "en" else [tr(t, r["lang"]) for t in T.CAPTION_TEMPLATES_EN]
        assert r["prompt"] in allowed
        assert r["target"].startswith(f"<{r['lang']}>") == (r["lang"] != "en")
    for r in by("match"):  # caption translated, template and answer English
        assert any(r["target"] in (y, n) for _, y, n in T.MATCHING_TEMPLATES)
        assert (f"<{r['lang']}>" in r["prompt"]) == (r["lang"] != "en")
    for r in by("classify"):  # label from the human label table, never machine-translated
        assert "<" not in r["target"] and names[r["lang"]] in r["prompt"]
    for r in by("verify"):
        assert "<" not in r["prompt"] and r["target"] in {a for _, y, n in T.IMAGENET_DECIDE_TEMPLATES for a in (y, n)}
    for r in by("describe"):
        assert (r["prompt"].startswith(f"<{r['lang']}>") and r["target"].startswith(f"<{r['lang']}>")) or r["lang"] == "en"
    # VQA answer rule: about half of non-English answers translated, English questions never
    vqa = by("vqa")
    non_en = [r for r in vqa if r["lang"] != "en"]
    frac = sum(r["target"].startswith("<") for r in non_en) / len(non_en)
    assert 0.35 < frac < 0.65
    assert not any(r["target"].startswith("<") for r in vqa if r["lang"] == "en")
    for r in non_en:  # the prompt names the language the answer is in
        lang_named = names[r["lang"]] if r["target"].startswith("<") else "English"
        assert lang_named in r["prompt"]


def test_english_only_ablation_has_the_same_examples_in_english(world):
    _, recs = mix(world, translated=False)
    assert {r["lang"] for r in recs} == {"en"} and not any("<" in r["prompt"] + r["target"] for r in recs)
    assert len(recs) == sum(len(v) for v in world.values())


def test_plan_requests_is_deduplicated_and_covers_what_build_translates(world):
    assigned, _ = mix(world)
    reqs = M.plan_requests(world, assigned)
    assert len(reqs) == len(set(reqs))
    asked = set(reqs)
    seen = set()

    def spy(text, lang):
        if lang != "en":
            seen.add(M.Request(text, lang))
        return tr(text, lang)
    labels = {l: M.label_dictionary(sorted(M._answers_in(world["vqa"])), l, spy, None) for l in LANGS if l != "en"}
    M.build(world, assigned, spy, labels, 7)
    assert seen <= asked


def test_missing_annotation_file_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `mblip fetch`"):
        M.load_english(tmp_path, "train", ["caption"])
