"""The language table and the authors' assignment procedure (protocol §6.4, §7)."""
import math

import numpy as np
import pytest

from mblip import languages as L


def test_table_has_all_96_rows_with_the_authors_quirks():
    t = L.table()
    assert len(t) == 96 and list(t)[:3] == ["af", "am", "ar"]
    assert t["zh"].nllb == "zho_Hant"  # the authors translated Chinese into Traditional script
    assert t["iw"].name == "former Hebrew" and t["bn"].name == "Bangla"
    assert t["ku"].nllb == "ckb_Arab" and t["fil"].nllb == "tgl_Latn"
    assert abs(t["en"].mc4_share - 43.84274322) < 1e-9
    assert 99.0 < sum(l.mc4_share for l in t.values()) < 101.0


def test_assignment_counts_are_floor_n_p_over_100_in_table_order():
    n = 2_273_005  # the Web CapFilt file of the paper
    langs = L.assign(n, seed=42)
    got = {}
    for c in langs:
        if c is not None:
            got[c] = got.get(c, 0) + 1
    expect = {c: math.floor(n * l.mc4_share / 100) for c, l in L.table().items()}
    assert {c: got.get(c, 0) for c in expect} == expect
    assert got["en"] == 996_547 and got["ru"] == 257_052 and got["de"] == 138_393  # protocol §6.4
    assert sum(got.values()) == 2_272_954  # protocol §6.1: rows of the translated file


def test_assignment_is_a_seeded_shuffle_then_contiguous_slices():
    n = 1000
    a = L.assign(n, ["en", "de", "fr"], seed=42)
    order = np.random.RandomState(42).permutation(n)
    cnt = L.counts(n, L.shares(["en", "de", "fr"]))
    # the first slice of the shuffled order is German (table order: de, en, fr)
    assert all(a[i] == "de" for i in order[:cnt["de"]])
    assert all(a[i] == "en" for i in order[cnt["de"]:cnt["de"] + cnt["en"]])
    assert L.assign(n, ["en", "de", "fr"], seed=42) == a
    assert L.assign(n, ["en", "de", "fr"], seed=7) != a


def test_restricted_list_renormalises_and_temperature_flattens():
    s = L.shares(["en", "sw"])
    assert abs(sum(s.values()) - 100) < 1e-9 and s["sw"] < 0.1
    t = L.shares(["en", "sw"], "temperature", 10.0)
    assert abs(sum(t.values()) - 100) < 1e-9 and t["sw"] > 30  # (0.0143/43.8)^(1/10) ≈ 0.45
    same = L.shares(["en", "sw"], "temperature", 1.0)
    assert all(abs(same[c] - s[c]) < 1e-9 for c in s)


def test_unknown_code_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown language code 'he'"):
        L.get("he")  # the table uses the mT5 code iw
    with pytest.raises(ValueError, match="assignment must be one of"):
        L.shares(None, "uniform")
