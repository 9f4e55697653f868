"""Behaviour of mblip.translate on a tiny NLLB-format model built in-test (no network, no downloads).

The model (``conftest.build_tiny_nllb``) is an ``M2M100ForConditionalGeneration`` (d_model 64, one layer each side)
with an ``NllbTokenizer`` whose BPE vocabulary is trained in-test with ``tokenizers``; it carries all 202 NLLB
language-code tokens. It is trained for ~1 s to copy its input, so its outputs depend on the input (a random model
emits the same token soup for every sentence, which would let an order bug pass). Both are saved with
``save_pretrained`` and loaded through the real ``Translator`` path.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported

import json
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import NLLB_ENGLISH, build_tiny_nllb

from mblip import translate as T

REPO = Path(__file__).resolve().parents[1]
ENGLISH = NLLB_ENGLISH


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Never touch the network, even if huggingface_hub was imported before HF_HUB_OFFLINE was set."""
    import huggingface_hub.constants
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def tiny_nllb(tmp_path_factory) -> Path:
    torch.set_num_threads(1)  # shared 2-core machine
    folder = tmp_path_factory.mktemp("tiny-nllb")
    build_tiny_nllb(folder)
    return folder


def make(model_dir, cache_dir, **kw) -> T.Translator:
    kw.setdefault("batch_size", 3)
    kw.setdefault("max_new_tokens", 16)
    kw.setdefault("device", "cpu")  # fp32 on CPU everywhere, so the equality checks hold on GPU machines too
    return T.Translator(model_dir, cache_dir=cache_dir, progress=False, **kw)


class Spy:
    """Wraps ``model.generate``: records inputs, outputs and configs; can fail after ``fail_after`` calls."""

    def __init__(self, tr: T.Translator, fail_after: int | None = None):
        self.inputs, self.outputs, self.configs = [], [], []
        original = tr.model.generate

        def generate(*args, **kwargs):
            if fail_after is not None and len(self.inputs) >= fail_after:
                raise RuntimeError("simulated crash")
            self.inputs.append(kwargs["input_ids"].clone())
            self.configs.append(kwargs.get("generation_config"))
            out = original(*args, **kwargs)
            self.outputs.append(out)
            return out

        tr.model.generate = generate

    @property
    def rows(self) -> int:
        return sum(len(x) for x in self.inputs)


def test_forced_first_token_is_the_target_code_and_source_code_is_prepended(tiny_nllb, tmp_path):
    tr = make(tiny_nllb, tmp_path)
    spy = Spy(tr)
    tr.translate(ENGLISH[:4], "deu_Latn")
    tr.translate(ENGLISH[:4], "zho_Hant")
    tok = tr.tokenizer
    eng, deu, zho = (tok.convert_tokens_to_ids(c) for c in ("eng_Latn", "deu_Latn", "zho_Hant"))
    assert len({deu, zho, eng, tok.unk_token_id}) == 4
    for inputs in spy.inputs:
        assert (inputs[:, 0] == eng).all()  # NLLB source format: <src code> tokens </s>
    deu_out = torch.cat([o[:, :2] for o in spy.outputs[:2]])
    zho_out = torch.cat([o[:, :2] for o in spy.outputs[2:]])
    assert (deu_out[:, 0] == 2).all() and (deu_out[:, 1] == deu).all()  # decoder start, then the forced code
    assert (zho_out[:, 1] == zho).all()


def test_dedup_generates_each_distinct_string_once(tiny_nllb, tmp_path):
    tr = make(tiny_nllb, tmp_path)
    spy = Spy(tr)
    texts = [ENGLISH[0], ENGLISH[1], ENGLISH[0], ENGLISH[2], ENGLISH[1], ENGLISH[0]]
    out = tr.translate(texts, "deu_Latn")
    assert spy.rows == 3
    assert out[0] == out[2] == out[5] and out[1] == out[4]
    assert tr.last_stats.unique == 3 and tr.last_stats.new == 3 and tr.last_stats.requested == 6


def test_length_sorted_batches_restore_input_order(tiny_nllb, tmp_path):
    tr = make(tiny_nllb, tmp_path / "batched", batch_size=3)
    spy = Spy(tr)
    out = tr.translate(ENGLISH, "deu_Latn")
    # batches go longest first ...
    lengths = [int(x.ne(tr.tokenizer.pad_token_id).sum(1).max()) for x in spy.inputs]
    assert lengths == sorted(lengths, reverse=True) and len(lengths) == 3
    # ... and each output still belongs to its input: one-at-a-time translation gives the same strings
    single = make(tiny_nllb, tmp_path / "single", batch_size=1)
    assert out == [single.translate([t], "deu_Latn")[0] for t in ENGLISH]
    assert len(set(out)) >= 6  # outputs depend on the input, so an order bug could not hide
    assert sum(o.strip() == t for o, t in zip(out, ENGLISH)) >= 4  # the copy model mostly copies


def test_second_call_is_served_from_the_cache_without_loading_the_model(tiny_nllb, tmp_path):
    first = make(tiny_nllb, tmp_path)
    out = first.translate_many([(t, "deu_Latn") for t in ENGLISH] + [(t, "zho_Hant") for t in ENGLISH[:3]])
    again = make(tiny_nllb, tmp_path)  # a new process would look the same
    assert again.translate_many([(t, "deu_Latn") for t in ENGLISH] + [(t, "zho_Hant") for t in ENGLISH[:3]]) == out
    assert again._model is None  # zero generate calls: the model was never even loaded
    assert again.last_stats.cached == 11 and again.last_stats.new == 0


def test_translate_many_groups_batches_by_target_language(tiny_nllb, tmp_path):
    tr = make(tiny_nllb, tmp_path / "many", batch_size=4)
    spy = Spy(tr)
    requests = [(t, "deu_Latn" if i % 2 else "zho_Hant") for i, t in enumerate(ENGLISH)]
    requests += [(ENGLISH[0], "eng_Latn"), ("   ", "deu_Latn")]  # passed through unchanged
    out = tr.translate_many(requests)
    for ids, cfg in zip(spy.outputs, spy.configs):
        assert (ids[:, 1] == cfg.forced_bos_token_id).all()  # one target language per batch
    assert len(spy.inputs) == 2 and spy.rows == 8
    ref = make(tiny_nllb, tmp_path / "ref")
    assert out[:8] == [ref.translate([t], lang)[0] for t, lang in requests[:8]]
    assert out[8:] == [ENGLISH[0], "   "] and tr.last_stats.passthrough == 2


def test_interrupted_run_resumes_with_only_the_missing_work_and_the_same_output(tiny_nllb, tmp_path):
    texts = ENGLISH + [t.upper() for t in ENGLISH]  # 16 distinct, batch 3 -> 6 batches
    reference = make(tiny_nllb, tmp_path / "uninterrupted").translate(texts, "deu_Latn")

    crashing = make(tiny_nllb, tmp_path / "resumed")
    Spy(crashing, fail_after=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.translate(texts, "deu_Latn")
    assert crashing.cache.count() == 6  # the two finished batches were committed

    resumed = make(tiny_nllb, tmp_path / "resumed")
    spy = Spy(resumed)
    assert resumed.translate(texts, "deu_Latn") == reference
    assert spy.rows == 16 - 6 and resumed.last_stats.cached == 6


def test_killed_process_resumes(tiny_nllb, tmp_path):
    """A real SIGKILL in the middle of a run (no exception handlers, no cleanup): the rerun finishes the job."""
    texts = ENGLISH + [t.upper() for t in ENGLISH]
    script = tmp_path / "victim.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time, torch
        torch.set_num_threads(1)
        from mblip.translate import Translator
        tr = Translator({str(tiny_nllb)!r}, cache_dir={str(tmp_path / 'cache')!r}, batch_size=3, max_new_tokens=16,
                        device="cpu", progress=False)
        original, calls = tr.model.generate, []
        def generate(*a, **k):
            if len(calls) == 2:
                print("two batches committed", flush=True)
                time.sleep(120)
            calls.append(1)
            return original(*a, **k)
        tr.model.generate = generate
        tr.translate({texts!r}, "deu_Latn")
    """))
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            text=True)
    try:
        line = proc.stdout.readline()
        assert "two batches committed" in line, proc.stderr.read()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    resumed = make(tiny_nllb, tmp_path / "cache")
    spy = Spy(resumed)
    out = resumed.translate(texts, "deu_Latn")
    assert spy.rows == 16 - 6
    assert out == make(tiny_nllb, tmp_path / "reference").translate(texts, "deu_Latn")


def test_cache_key_changes_with_decoding_params_and_model(tiny_nllb, tmp_path):
    cache = tmp_path / "cache"
    base = make(tiny_nllb, cache)
    base.translate(ENGLISH[:3], "deu_Latn")

    for changed in (dict(num_beams=2), dict(max_new_tokens=5)):
        other = make(tiny_nllb, cache, **changed)
        assert other.setting != base.setting
        spy = Spy(other)
        other.translate(ENGLISH[:3], "deu_Latn")
        assert spy.rows == 3, changed
    assert make(tiny_nllb, cache, batch_size=7).setting == base.setting  # batch size is not a decoding param

    moved = tmp_path / "same-model-elsewhere"
    shutil.copytree(tiny_nllb, moved)
    assert make(moved, cache).setting == base.setting  # content hash, not path

    from safetensors.torch import load_file, save_file
    changed_model = tmp_path / "changed-model"
    shutil.copytree(tiny_nllb, changed_model)
    weights = load_file(changed_model / "model.safetensors")
    name = next(iter(weights))
    weights[name] = weights[name] + 1e-3
    save_file(weights, changed_model / "model.safetensors", metadata={"format": "pt"})
    other = make(changed_model, cache)
    assert other.setting != base.setting
    spy = Spy(other)
    other.translate(ENGLISH[:3], "deu_Latn")
    assert spy.rows == 3


def test_merge_of_another_ranks_shard(tiny_nllb, tmp_path):
    """Multi-process path without several processes: a rank-1 shard is merged by the main process and used."""
    tr = make(tiny_nllb, tmp_path)
    shard = T.TranslationCache(tmp_path, rank=1)
    shard.put(tr.setting, "eng_Latn", "deu_Latn", [(ENGLISH[0], "from rank 1")])
    shard.close()
    assert (tmp_path / "shard-rank1.sqlite").exists()
    assert tr.translate([ENGLISH[0]], "deu_Latn") == ["from rank 1"]
    assert tr._model is None and not (tmp_path / "shard-rank1.sqlite").exists()


def test_errors_name_the_problem_and_the_fix(tiny_nllb, tmp_path):
    tr = make(tiny_nllb, tmp_path)
    with pytest.raises(ValueError, match=r"unknown target language code 'zho_Hani'.*zho_Hant"):
        tr.translate(["a"], "zho_Hani")
    with pytest.raises(ValueError, match=r"'de'.*deu_Latn"):
        tr.translate(["a"], "de")
    with pytest.raises(ValueError, match=r"unknown source language code 'english'"):
        tr.translate(["a"], "deu_Latn", src_nllb="english")
    assert tr._model is None  # rejected before any work
    with pytest.raises(FileNotFoundError, match="does not exist"):
        T.Translator(tmp_path / "no-such-model", cache_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        T.Translator(tmp_path / "empty", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        T.Translator(tiny_nllb, cache_dir=tmp_path, batch_size=0)


def test_round_trip_chrf_and_script_check_on_hand_made_strings():
    assert T.round_trip_chrf("a red circle on the left", "a red circle on the left") == pytest.approx(100.0)
    assert T.round_trip_chrf("a red circle on the left", "a red circle left") > 50
    assert T.round_trip_chrf("a red circle on the left", "xyz qwv") < 10

    assert not T.script_check("a red circle", "rus_Cyrl")  # untranslated English for Russian
    assert T.script_check("красный круг", "rus_Cyrl") and T.script_check("красный круг", "ru")
    assert T.script_check("Krasnyy krug, NASA", "deu_Latn")
    assert T.script_check("左边的红色圆圈", "zho_Hant") and not T.script_check("red circle", "zho_Hant")
    assert T.script_check("赤い丸がある", "jpn_Jpan") and T.script_check("빨간 원", "kor_Hang")
    assert T.script_check("עיגול אדום", "heb_Hebr") and not T.script_check("красный", "ell_Grek")
    assert T.script_check("42 %", "tha_Thai")  # no letters: nothing to flag
    assert T.script_fraction("Москва NASA", "rus_Cyrl") == pytest.approx(6 / 10)
    with pytest.raises(ValueError, match="no script table entry"):
        T.script_check("x", "abc_Zzzz")

    samples = [
        {"lang": "rus_Cyrl", "src": "a red circle", "mt": "красный круг", "back": "a red circle"},
        {"lang": "rus_Cyrl", "src": "two squares", "mt": "two squares", "back": "two squares"},  # untranslated
        ("deu_Latn", "a star", "ein Stern", "one star"),
    ]
    rows = {r["lang"]: r for r in T.quality_table(samples)}
    assert rows["rus_Cyrl"]["n"] == 2 and rows["rus_Cyrl"]["script_ok_rate"] == 0.5
    assert rows["rus_Cyrl"]["script_flagged"] == 1 and rows["rus_Cyrl"]["chrf_mean"] == pytest.approx(100.0)
    assert rows["deu_Latn"]["chrf_mean"] == pytest.approx(T.round_trip_chrf("a star", "one star"))
    assert T.keep_mask(samples) == [True, True, True]  # off by default, as in the paper
    assert T.keep_mask(samples, min_script_fraction=0.5) == [True, False, True]
    assert T.keep_mask(samples, min_chrf=90) == [True, True, False]


def test_round_trip_samples_feed_the_quality_table(tiny_nllb, tmp_path):
    tr = make(tiny_nllb, tmp_path)
    samples = tr.round_trip(ENGLISH[:3], "deu_Latn")
    assert [s["src"] for s in samples] == ENGLISH[:3]
    (row,) = T.quality_table(samples)
    assert row["lang"] == "deu_Latn" and row["n"] == 3 and 0 <= row["chrf_mean"] <= 100


@pytest.mark.skipif(os.environ.get("MBLIP_SLOW_TESTS") != "1",
                    reason="starts 2 torchrun processes (~15 s on 2 cores, over the suite's 30 s budget); "
                           "run with MBLIP_SLOW_TESTS=1")
def test_two_processes_split_the_work_and_match_one_process(tiny_nllb, tmp_path):
    """torchrun with 2 CPU processes (gloo): each rank translates its share into its own shard, the main process
    merges, every rank returns the full output, identical to a single-process run."""
    texts = ENGLISH + [t.upper() for t in ENGLISH]
    script = tmp_path / "ranks.py"
    script.write_text(textwrap.dedent(f"""
        import json, torch
        torch.set_num_threads(1)
        from mblip.translate import Translator
        tr = Translator({str(tiny_nllb)!r}, cache_dir={str(tmp_path / 'cache')!r}, batch_size=3, max_new_tokens=16,
                        device="cpu", progress=False)
        out = tr.translate({texts!r}, "deu_Latn")
        json.dump({{"out": out, "new": tr.last_stats.new, "world": tr.state.num_processes}},
                  open({str(tmp_path)!r} + f"/rank{{tr.state.process_index}}.json", "w"))
    """))
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": ""}  # two CPU ranks (gloo) even on a one-GPU machine
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.Popen([*torchrun, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:  # never leave hung ranks behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert sorted(r["new"] for r in ranks) == [7, 9]  # 6 batches of <= 3, round-robin: 3+3+3 and 3+3+1
    assert ranks[0]["out"] == ranks[1]["out"] == make(tiny_nllb, tmp_path / "one").translate(texts, "deu_Latn")
    assert not list((tmp_path / "cache").glob("shard-*"))  # merged and removed


def test_hub_id_resolves_to_its_commit_offline(tiny_nllb, tmp_path):
    """A hub id is pinned to the commit it resolves to (here from a local HF cache laid out like the Hub's)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "models--someone--tiny-nllb"
    shutil.copytree(tiny_nllb, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    by_id = make("someone/tiny-nllb", tmp_path / "cache", hf_cache_dir=str(tmp_path / "hf"))
    assert by_id.description["model"] == "someone/tiny-nllb" and by_id.description["revision"] == commit
    assert by_id.translate(ENGLISH[:2], "deu_Latn") == make(tiny_nllb, tmp_path / "c2").translate(ENGLISH[:2],
                                                                                                  "deu_Latn")
    by_path = make(repo / "snapshots" / commit, tmp_path / "cache")
    assert by_path.setting == by_id.setting  # the snapshot folder shares the hub id's cache entries
    with pytest.raises(OSError, match="neither a local folder.*nor available from the Hugging Face Hub"):
        make("someone/other-model", tmp_path / "cache", hf_cache_dir=str(tmp_path / "hf"))
