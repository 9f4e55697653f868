"""The paper's task mix from its official sources: one reader per source on hand-made files in each official format
(tests/fixtures/taskmix/, laid out like data/paper), tiny images written here (some missing, some truncated), the
mix built through `taskmix.build` with a marker translator, and the released-mix converter. No network."""
import json
from pathlib import Path

import pytest
from conftest import TASKMIX_FIXTURES as FIXTURES
from conftest import make_paper_root as make_root
from conftest import write_image as _write

from mblip import taskmix as M
from mblip import taskmix_paper as P
from mblip import templates as T

LANGS = ["en", "de", "fr", "iw"]


def tr(text, lang):
    return text if lang == "en" else f"<{lang}>{text}"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_root(tmp_path_factory.mktemp("tm"))


@pytest.fixture(scope="module")
def paper(root):
    return P.build_paper_english(root, P.PAPER_TASKS, languages=LANGS, workers=2, imagenet_passes=1,
                                 match_window=(0, None), match_block=2, progress=False)


# ------------------------------------------------------------------------------------------------------- readers
def test_every_reader_gives_demo_schema_with_the_task_fields(paper, root):
    english, coverage = paper
    counts = {t: len(v) for t, v in english.items()}
    assert counts == {"caption": 6 + 11, "vqa": 4, "vqg": 4, "match": 6, "classify": 10, "verify": 10,
                      "describe": 2, "conversation": 3, "cot": 6, "explain": 6}
    assert coverage["tasks"] == counts
    for task, rows in english.items():
        assert len({r["id"] for r in rows}) == len(rows), task
        for r in rows:
            assert r["task"] == task
            assert set(r["en"]) == set(P.TASK_FIELDS[task]), (task, r["en"])
            assert all(isinstance(v, str) and v for v in r["en"].values())
            assert not Path(r["image"]).is_absolute() and (root / r["image"]).is_file()
    coco = [r for r in english["caption"] if r["id"].startswith("coco-")]
    assert {r["image"] for r in coco} == {"coco/train2014/COCO_train2014_000000000009.jpg",
                                          "coco/train2014/COCO_train2014_000000000025.jpg"}
    assert "Caption 5 of image 25." in {r["en"]["caption"] for r in coco}  # every sentence, not only 5
    vqa = {r["id"]: r["en"] for r in english["vqa"]}
    assert vqa["vqav2-25001"] == {"question": "How many people are there?", "answer": "2"}  # joined by question_id
    assert [r["en"] for r in english["vqg"]] == [r["en"] for r in english["vqa"]]


def test_missing_and_truncated_images_are_counted_per_source_and_left_out(paper):
    english, coverage = paper
    src = coverage["sources"]
    got = {name: (s["images_missing"], s["images_unreadable"], s["records_dropped_for_images"])
           for name, s in src.items()}
    assert got == {"webcapfilt": (1, 1, 2), "coco": (0, 1, 5), "vqav2": (1, 1, 2), "aokvqa": (0, 0, 0),
                   "llava-detail": (0, 0, 0), "llava-conversation": (0, 0, 0), "imagenet": (0, 1, 2),
                   "match": (0, 0, 0)}
    assert coverage["images_left_out"] == {"missing": 2, "unreadable": 4, "records": 11}
    bad = dict(map(tuple, src["webcapfilt"]["bad_images"]))
    assert bad["webcapfilt/images/00000003.jpg"] == "missing"
    assert bad["webcapfilt/images/00000004.jpg"].startswith("unreadable")  # a truncated JPEG passes PIL's verify()
    used = {r["image"] for rows in english.values() for r in rows}
    assert not used & {"webcapfilt/images/00000004.jpg", "coco/train2014/COCO_train2014_000000000030.jpg",
                       "imagenet/train/n01443537/n01443537_1.JPEG"}
    # protocol filters are reported apart from broken images
    assert src["coco"]["filtered"] == {"images of split 'restval' (only 'train' is used)": 1,
                                       "images of split 'val' (only 'train' is used)": 1}
    assert src["aokvqa"]["filtered"]["records whose image is not in train2014 (a val2014 image)"] == 3
    assert src["llava-detail"]["filtered"] == {"records whose image is not in train2014 (a val2014 image)": 1}
    assert src["coco"]["protocol_rows"] == {"unit": "captions", "count": 414_113}
    table = P.coverage_markdown(coverage)
    assert table.count("\n") == 2 + len(src) and "| webcapfilt | 8 | 2,273,005 captions |" in table


def test_aokvqa_gives_one_english_example_per_rationale(paper):
    english, _ = paper
    cot = english["cot"]
    assert [r["id"] for r in cot] == [f"aokvqa-{q}-{k}" for q in ("q1", "q3") for k in range(3)]
    assert {r["en"]["answer"] for r in cot} == {"swimming", "biking"}  # choices[idx]; q3: most common direct answer
    assert [r["en"]["rationale"] for r in cot[:3]] == ["It ran into the sea.", "Dogs get wet when they swim",
                                                      "The beach has water."]
    assign = P.assign_paper(english, LANGS, "temperature", 10.0, 7, translated=True)
    assert set(assign["cot"]) == set(assign["explain"]) == {"en"}
    recs = P.build_paper({t: english[t] for t in ("cot", "explain")}, assign, tr, {}, 7)
    assert len(recs) == 12 and all(r["lang"] == "en" and "<" not in r["prompt"] + r["target"] for r in recs)
    src = {r["id"]: r["en"] for r in cot}
    for r in recs:
        f = src[r["id"]]
        if r["task"] == "cot":
            assert r["prompt"] in {t.format(f["question"]) for t in T.AOKVQA_COT_QUESTION_TEMPLATES}
            rationale = f["rationale"].removesuffix(".")  # one final '.' dropped, as the authors
            assert r["target"] in {t.format(rationale, f["answer"]) for t in T.AOKVQA_COT_ANSWER_TEMPLATES}
        else:
            assert r["prompt"] in {t.format(f["question"], f["answer"]) for t in T.AOKVQA_EXPLANATION_TEMPLATES}
            assert r["target"] == f["rationale"]


def test_llava_turns_are_split_stripped_and_limited_to_three_dots(paper):
    english, coverage = paper
    conv = {r["id"]: r["en"] for r in english["conversation"]}
    assert conv == {
        "llava-conversation-000000000025-0": {"instruction": "What are the people doing?",
                                              "answer": "They are riding bikes."},
        "llava-conversation-000000000025-2": {"instruction": "How many bikes?",
                                              "answer": "There are two bikes, e.g. one red and one blue."},
        "llava-conversation-000000000009-0": {"instruction": "What animal is shown?", "answer": "A dog."},
    }
    assert coverage["sources"]["llava-conversation"]["filtered"] == {"turns whose answer has more than 3 '.'": 2}
    detail = english["describe"][0]  # detail answers are not limited
    assert detail["en"]["instruction"] == "Describe the following image."
    assert detail["en"]["description"].count(".") == 4
    turns = [{"from": "human", "value": "Is it a city\nor a village?<image>"}, {"from": "gpt", "value": "A. B. C. D."},
             {"from": "human", "value": "x"}, {"from": "gpt", "value": "A. B. C."}, {"from": "human", "value": "left"}]
    assert P.split_conversation(turns) == [(0, "Is it a cityor a village?", "A. B. C. D.", False),
                                           (1, "x", "A. B. C.", True)]


def test_imagenet_decide_is_half_positive_with_the_protocols_negatives():
    n_cls, wnids = 50, [f"n{i:08d}" for i in range(50)]
    listing = {w: [f"{w}_{k}.JPEG" for k in range(400)] for w in wnids}
    english = [f"class {i}" for i in range(n_cls)]
    babel = {"DE": (list(range(n_cls)), [f"Klasse {i}" for i in range(n_cls)])}
    classify, verify, skipped = P.plan_imagenet(listing, wnids, babel, english, ["en", "de"], passes=4, seed=1)
    assert len(classify) == len(verify) == 4 * 2 * n_cls and not skipped
    for r in classify:  # target from the label table in the record's language, English for en
        ci = int(r["id"].rsplit("-", 1)[1])
        assert r["en"] == {"label": english[ci]}
        assert r["lang"] == "en" or r["gold"][r["lang"]] == {"label": f"Klasse {ci}"}
    per_synset = {}
    for r in classify:  # every classify example of a synset gets its own image
        per_synset.setdefault(r["image"].split("/")[-2], []).append(r["image"])
    assert all(len(set(v)) == len(v) == 8 for v in per_synset.values())
    yes = [r for r in verify if r["en"]["label"] == "yes"]
    assert 0.42 < len(yes) / len(verify) < 0.58
    nxt = 0
    for r in verify:
        ci = int(r["id"].rsplit("-", 1)[1])
        shown = english[ci]
        if r["en"]["label"] == "yes":
            assert r["en"]["object"] == shown
        else:
            assert r["en"]["object"] != shown  # never the class in the image
            nxt += r["en"]["object"] == english[(ci + 1) % n_cls]
        if r["lang"] == "de":
            assert r["gold"]["de"]["object"] == r["en"]["object"].replace("class", "Klasse")
    n_neg = len(verify) - len(yes)
    assert 0.35 < nxt / n_neg < 0.65  # half "next class in the list", half a random class
    # verify walks back over the classify images (the authors re-use them)
    assert {r["image"] for r in verify} - {r["image"] for r in classify} == {
        f"imagenet/train/{w}/{w}_8.JPEG" for w in wnids}


def test_imagenet_reader_uses_babel_labels_with_the_hebrew_fallback(paper, root):
    english, _ = paper
    cls = english["classify"]
    assert {r["lang"] for r in cls} == set(LANGS)
    iw = [r for r in cls if r["lang"] == "iw"]
    assert [r["gold"]["iw"]["label"] for r in iw] == ["דג זהב", "כריש לבן גדול"]  # Babel's "HE" for "iw"
    assert {r["en"]["label"] for r in cls if r["lang"] == "en"} == {"tench", "goldfish", "great white shark",
                                                                    "tiger shark"}
    by_task, report = P.read_imagenet(root, P.ImageChecker(root, progress=False), languages=LANGS, passes=1,
                                      labels="imagenet/absent.json")
    assert {r["lang"] for rows in by_task.values() for r in rows} == {"en"} and len(by_task["classify"]) == 4
    assert "label table missing" in next(iter(report.filtered))


def test_matching_alternates_blocks_and_reads_the_authors_negatives(paper, root, tmp_path):
    english, _ = paper
    match = english["match"]
    assert [r["en"]["label"] for r in match] == ["yes", "yes", "no", "no", "yes", "yes"]
    caption_of = {r["image"]: r["en"]["caption"] for r in english["caption"] if r["id"].startswith("webcapfilt")}
    for r in match:
        assert (r["en"]["caption"] == caption_of[r["image"]]) == (r["en"]["label"] == "yes")
    neg = [{"image_id": "00000000.jpg", "context": "a cat on a car", "label": "no", "original_label": "a dog"},
           {"image_id": "00000001.jpg", "context": "a red car", "label": "yes", "original_label": "a red car"},
           {"image_id": "00000003.jpg", "context": "x", "label": "yes", "original_label": "x"}]
    (root / "neg.json").write_text(json.dumps(neg))
    recs, report = P.read_matching(root, P.ImageChecker(root, progress=False), negatives="neg.json")
    assert [r["en"] for r in recs] == [{"caption": "a cat on a car", "label": "no"},
                                       {"caption": "a red car", "label": "yes"}]
    assert report.images_missing == 1


# ------------------------------------------------------------------------------------------------ the mix
def test_paper_mix_through_taskmix_build_follows_the_templates(paper):
    english, _ = paper
    langs = ["en", "de"]
    assigned = P.assign_paper(english, langs, "temperature", 10.0, 3, translated=True)
    assert set(assigned["classify"]) <= {"en", "de", None}  # ImageNet keeps its own languages, fr/iw left out
    assert [l for l in assigned["classify"] if l] == [r["lang"] for r in english["classify"] if r["lang"] in langs]
    seen = set()

    def spy(text, lang):
        if lang != "en":
            seen.add(M.Request(text, lang))
        return tr(text, lang)

    answers = sorted(M._answers_in(english["vqa"]))
    labels = {l: M.label_dictionary(answers, l, spy, None) for l in langs if l != "en"}
    recs = P.build_paper(english, assigned, spy, labels, 3)
    assert seen <= set(P.plan_paper_requests(english, assigned))  # everything translated was planned
    by = {}
    for r in recs:
        assert set(r) == {"id", "image", "lang", "task", "prompt", "target"} and r["lang"] in langs
        by.setdefault(r["task"], []).append(r)
    assert set(by) == set(P.PAPER_TASKS)
    src = {(t, r["id"]): r for t, rows in english.items() for r in rows}
    for r in by["caption"]:
        allowed = [t.format("German" if r["lang"] == "de" else "English") for t in T.CAPTION_TEMPLATES_LANG]
        allowed += [tr(t, r["lang"]) for t in T.CAPTION_TEMPLATES_EN]
        assert r["prompt"] in allowed and r["target"] == tr(src["caption", r["id"]]["en"]["caption"], r["lang"])
    for task in ("describe", "conversation"):  # LLaVA: instruction and answer both translated
        for r in by[task]:
            f = src[task, r["id"]]["en"]
            assert r["prompt"] == tr(f["instruction"], r["lang"])
            assert r["target"] == tr(f["description" if task == "describe" else "answer"], r["lang"])
    for r in by["classify"]:  # Babel-ImageNet label, English template naming the language
        f = src["classify", r["id"]]
        assert r["target"] == (f["en"]["label"] if r["lang"] == "en" else f["gold"]["de"]["label"])
        assert r["prompt"] in {t.format("German" if r["lang"] == "de" else "English") for t in T.IMAGENET_TEMPLATES}
    for r in by["verify"]:
        f = src["verify", r["id"]]
        obj = f["en"]["object"] if r["lang"] == "en" else f["gold"]["de"]["object"]
        t = next(t for t in T.IMAGENET_DECIDE_TEMPLATES if t[0].format(obj) == r["prompt"])
        assert r["target"] == (t[1] if f["en"]["label"] == "yes" else t[2])
    for r in by["match"]:  # caption translated, template and answer English
        assert any(r["target"] in (y, n) for _, y, n in T.MATCHING_TEMPLATES)
        assert (f"<{r['lang']}>" in r["prompt"]) == (r["lang"] != "en")
    for r in by["vqg"]:
        assert r["target"] == tr(src["vqg", r["id"]]["en"]["question"], r["lang"])


def test_english_only_ablation(paper):
    english, _ = paper
    assigned = P.assign_paper(english, LANGS, "mc4", 1.0, 3, translated=False)
    recs = P.build_paper(english, assigned, tr, {}, 3)
    assert len(recs) == sum(map(len, english.values())) and {r["lang"] for r in recs} == {"en"}
    assert not any("<" in r["prompt"] + r["target"] for r in recs)


# ------------------------------------------------------------------------------------------------ released mix
def test_released_mix_is_converted_streaming_with_task_and_language_inferred(root, tmp_path):
    rep = P.convert_released(root, tmp_path / "out", val_rows=2, chunk_chars=16, progress=False)
    assert rep["rows"] == 14 and rep["images_missing"] == 1 and rep["records_dropped_for_images"] == 1
    assert rep["written"] == {"val": {"caption": 2},
                              "train": {"caption": 1, "classify": 2, "cot": 1, "explain": 1, "match": 1,
                                        "released": 1, "verify": 1, "vqa": 2, "vqg": 1}}
    rows = {}
    for split in ("train", "val"):
        for f in sorted((tmp_path / "out" / split).glob("*.jsonl")):
            for line in f.read_text(encoding="utf-8").splitlines():
                r = json.loads(line)
                assert set(r) == {"id", "image", "lang", "task", "prompt", "target"}
                assert (root / r["image"]).is_file()
                rows[int(r["id"].rsplit("-", 1)[1])] = (r["task"], r["lang"])
    assert rows == {0: ("caption", "de"), 1: ("caption", "en"), 2: ("caption", "de"), 3: ("vqa", "de"),
                    4: ("vqa", "en"), 5: ("vqg", "fr"), 6: ("cot", "en"), 7: ("explain", "en"),
                    8: ("match", "unknown"), 9: ("classify", "iw"), 10: ("verify", "unknown"),
                    11: ("released", "unknown"), 13: ("classify", "unknown")}
    first = json.loads((tmp_path / "out/val/caption.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first == {"id": "task_mix_v2_mt-00000000", "image": "webcapfilt/images/00000000.jpg", "lang": "de",
                     "task": "caption", "prompt": "Caption the image in German.", "target": "Ein Hund rennt am Strand."}
    # without the released caption_templates.json the translated template is not recognised
    recs = list(P.iter_released(root / P.PATHS["released"]))
    assert (recs[2]["task"], recs[2]["lang"]) == ("released", "unknown")


def test_json_rows_stream_with_any_chunk_size(tmp_path):
    rows = [{"context": 'a "quoted" ] , [ {x}', "label": "ü\n€", "n": 12345}, 67890, "]", [1, [2]], {"e": 1e-7},
            {}, None, True]
    parts = [json.dumps(v, indent=2, ensure_ascii=False) for v in rows]
    lines, line = [], 2  # element k starts on the line after element k-1 ends
    for p in parts:
        lines.append(line)
        line += p.count("\n") + 1
    path = tmp_path / "rows.json"
    path.write_text("[\n" + ",\n".join(parts) + "\n]\n", encoding="utf-8")
    for chunk in (1, 2, 3, 7, 64, 1 << 20):
        got = list(P.iter_json_rows(path, chunk_chars=chunk))
        assert [v for _, _, v in got] == rows, chunk
        assert [i for i, _, _ in got] == list(range(len(rows)))
        assert [line for _, line, _ in got] == lines, chunk
    (tmp_path / "empty.json").write_text("[ ]")
    assert list(P.iter_json_rows(tmp_path / "empty.json")) == []


# ------------------------------------------------------------------------------------------------ errors
BROKEN = FIXTURES / "broken"


@pytest.mark.parametrize("name, message", [
    ("capfilt_missing_key.json", r"capfilt_missing_key.json:7: row 1: missing key 'caption' \(has \['jpg', 'url'\]\)"),
    ("capfilt_bad_row.json", r"capfilt_bad_row.json:4: row 2 is not valid JSON .*fetch it again"),
    ("capfilt_truncated.json", r"capfilt_truncated.json:3: row 1 is not valid JSON"),
    ("capfilt_url_only.json", r"row 0: no 'jpg' or 'image' key .*download_images"),
])
def test_malformed_capfilt_names_file_row_and_fix(root, name, message):
    with pytest.raises(P.PaperDataError, match=message):
        P.read_webcapfilt(root, P.ImageChecker(root, progress=False), path=str(BROKEN / name))


def test_malformed_sources_name_file_row_and_fix(root):
    checker = P.ImageChecker(root, progress=False)
    with pytest.raises(P.PaperDataError, match=r"llava_bad_turns.json: row 0: conversations\[1\] must be "
                                               r"\{'from': 'gpt'"):
        P.read_llava(root, checker, "conversation", path=str(BROKEN / "llava_bad_turns.json"))
    with pytest.raises(P.PaperDataError, match=r"question_id 123456 has no annotation .* must be the same split"):
        P.read_vqav2(root, checker, questions=str(BROKEN / "vqa_questions_orphan.json"))
    with pytest.raises(P.PaperDataError, match=r"released_missing_image_id.json:\d+: row 1: missing key 'image_id'"):
        list(P.iter_released(BROKEN / "released_missing_image_id.json"))
    with pytest.raises(P.PaperDataError, match=r"image_id 'foo/bar.png' matches no known image folder .*image_dirs"):
        list(P.iter_released(BROKEN / "released_unknown_image.json"))
    with pytest.raises(FileNotFoundError, match=r"mblip fetch --only aokvqa"):
        P.read_aokvqa(root, checker, path="aokvqa/nowhere.json")
    with pytest.raises(FileNotFoundError, match=r"LOC_synset_mapping.txt"):
        P.read_imagenet(root, checker, english="imagenet/none.txt")
    with pytest.raises(KeyError, match="unknown task"):
        P.build_paper_english(root, ["captions"])


def test_image_checks_are_cached_and_redone_when_a_file_changes(root, tmp_path, monkeypatch):
    work = tmp_path / "imgs"
    for i in range(3):
        _write(work, f"{i}.jpg", seed=i)
    cache = tmp_path / "cache" / "checks.sqlite"
    assert P.ImageChecker(work, cache=cache, progress=False).check(["0.jpg", "1.jpg", "2.jpg", "3.jpg"]) == {
        "0.jpg": None, "1.jpg": None, "2.jpg": None, "3.jpg": "missing"}
    data = (work / "1.jpg").read_bytes()
    (work / "1.jpg").write_bytes(data[: len(data) // 2])
    probed = []
    real = P.probe_image
    monkeypatch.setattr(P, "probe_image", lambda p: probed.append(p.name) or real(p))
    out = P.ImageChecker(work, cache=cache, progress=False).check(["0.jpg", "1.jpg", "2.jpg"])
    assert sorted(probed) == ["1.jpg"] and out["1.jpg"].startswith("unreadable") and out["0.jpg"] is None
