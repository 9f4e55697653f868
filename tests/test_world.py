"""The demo world's scenes and renderer: determinism, disjoint splits, images that show the graph."""

import json
import subprocess
import sys

import numpy as np
import pytest

from mblip.demo.world import (
    COLOURS, POSITIONS, SIZES, SPLIT_SHARES, Obj, Scene, make_scenes, object_centre, render, split_of, stable_hash,
)


def test_make_scenes_is_deterministic_and_seed_dependent():
    a = make_scenes(50, "train", seed=3)
    assert a == make_scenes(50, "train", seed=3)
    assert [s.key() for s in a] != [s.key() for s in make_scenes(50, "train", seed=4)]
    # a longer list extends a shorter one: sizes can grow without reshuffling earlier scenes
    assert make_scenes(60, "train", seed=3)[:50] == a


def test_scene_ids_and_constraints():
    scenes = make_scenes(150, "val", seed=0, max_objects=3)
    assert [s.id for s in scenes[:2]] == ["val-000000", "val-000001"]
    assert {len(s.objects) for s in scenes} == {1, 2, 3}
    for s in scenes:
        assert s.split == "val"
        columns = [o.position for o in s.objects]
        assert columns == sorted(columns, key=POSITIONS.index) and len(set(columns)) == len(columns)
        assert len({(o.colour, o.shape) for o in s.objects}) == len(s.objects)
    assert {len(s.objects) for s in make_scenes(100, "val", seed=0, max_objects=1)} == {1}


def test_splits_never_share_a_scene_graph():
    keys = {split: {s.key() for s in make_scenes(n, split, seed=0)} for split, n in
            (("train", 600), ("val", 150), ("test", 200))}
    assert not keys["train"] & keys["val"]
    assert not keys["train"] & keys["test"]
    assert not keys["val"] & keys["test"]
    # even with different seeds per split, ownership comes from the graph itself
    other = {s.key() for s in make_scenes(200, "test", seed=99)}
    assert not keys["train"] & other
    assert all(split_of(k) == "test" for k in other)


def test_single_object_graphs_exist_in_every_split():
    # 90 one-object graphs are shared out by hash: every split must still own some
    for split in SPLIT_SHARES:
        assert any(len(s.objects) == 1 for s in make_scenes(200, split, seed=0))


def test_scene_roundtrip_through_json():
    for s in make_scenes(20, "test", seed=1):
        assert Scene.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_invalid_input_names_the_problem():
    with pytest.raises(ValueError, match=r"Obj.colour must be one of \['red'"):
        Obj("circle", "orange", "small", "left")
    with pytest.raises(ValueError, match="unknown split 'dev'; use one of"):
        make_scenes(3, "dev", seed=0)
    with pytest.raises(ValueError, match="at most one object per column"):
        Scene("x", "train", (Obj("circle", "red", "small", "left"), Obj("square", "red", "small", "left")))
    with pytest.raises(ValueError, match="share \\(colour, shape\\)"):
        Scene("x", "train", (Obj("circle", "red", "small", "left"), Obj("circle", "red", "large", "right")))


def test_stable_hash_is_the_same_in_a_fresh_process():
    code = "from mblip.demo.world import stable_hash; print(stable_hash('train-000001'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(out) == stable_hash("train-000001")


def test_render_is_deterministic_and_rgb():
    s = make_scenes(1, "train", seed=0)[0]
    a, b = render(s, size=64, seed=0), render(s, size=64, seed=0)
    assert a.mode == "RGB" and a.size == (64, 64)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != render(s, size=64, seed=1).tobytes()  # the render seed changes jitter and noise


def test_pixel_at_each_object_centre_has_the_object_colour():
    for s in make_scenes(40, "train", seed=2):
        pixels = np.asarray(render(s, size=64, seed=0), dtype=int)
        for o in s.objects:
            x, y = object_centre(o, 64)
            got = pixels[int(y), int(x)]
            assert np.abs(got - np.array(COLOURS[o.colour])).max() <= 40, (s.id, o, got)


def test_background_is_light_and_empty_columns_stay_empty():
    for s in make_scenes(30, "train", seed=5):
        pixels = np.asarray(render(s, size=64, seed=0), dtype=int)
        assert pixels[1, 1].min() > 200  # corners are never covered
        for p in POSITIONS:
            if s.at(p) is None:
                column = pixels[:, POSITIONS.index(p) * 64 // 3 + 3:(POSITIONS.index(p) + 1) * 64 // 3 - 3]
                assert column.min() > 190, (s.id, p)


def _object_area(obj):
    s = Scene("area-" + obj.shape + obj.size, "train", (obj,))
    pixels = np.asarray(render(s, size=64, seed=0), dtype=int)
    return int((np.abs(pixels - np.array(COLOURS[obj.colour])).max(axis=2) < 60).sum())


@pytest.mark.parametrize("shape", ["circle", "square", "triangle"])
def test_large_objects_are_clearly_larger(shape):
    small = _object_area(Obj(shape, "blue", "small", "middle"))
    large = _object_area(Obj(shape, "blue", "large", "middle"))
    assert small > 40 and large > 2 * small  # radii differ by SIZES ratio, areas by its square
    assert SIZES["large"] / SIZES["small"] > 1.5


def test_distinct_scenes_render_differently():
    a, b = make_scenes(2, "test", seed=0)
    assert a.key() != b.key()
    assert np.abs(np.asarray(render(a), dtype=int) - np.asarray(render(b), dtype=int)).max() > 100
