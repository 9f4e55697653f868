"""params.yaml -> Config: presets, layering, and errors that name the key, the value and the fix."""
from pathlib import Path

import pytest
import yaml

from mblip import config as C

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, data) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def base():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_repo_params_load_in_every_preset():
    for preset in C.PRESETS:
        cfg = C.load(ROOT / "params.yaml", overrides={"preset": preset})
        assert cfg.preset == preset
    demo = C.load(ROOT / "params.yaml")
    assert demo.data.source == "demo" and demo.models.quantization == "none"
    mt0 = C.load(ROOT / "params.yaml", overrides={"preset": "paper-mt0xl"})
    assert (mt0.models.llm, mt0.models.quantization, mt0.models.projection) == ("bigscience/mt0-xl", "8bit", "reuse")
    assert (mt0.realign.lr_qformer, mt0.realign.lr_lora, mt0.realign.batch_size) == (1e-5, 2e-4, 128)
    bloom = C.load(ROOT / "params.yaml", overrides={"preset": "paper-bloomz7b"})
    assert (bloom.models.llm, bloom.models.quantization, bloom.models.projection) == ("bigscience/bloomz-7b1", "4bit", "new")
    assert mt0.languages.use is None  # all 96, as the paper


def test_params_layer_wins_over_preset_in_every_preset(tmp_path):
    # `dvc exp run -S lora.rank=16` edits params.yaml; it must take effect whatever the preset.
    for preset in C.PRESETS:
        d = base() | {"preset": preset}
        d["lora"]["rank"] = 16
        d["realign"] = {**d["realign"], "steps": 7}
        cfg = C.load(write(tmp_path, d))
        assert cfg.lora.rank == 16 and cfg.realign.steps == 7


@pytest.mark.parametrize("override, needle", [
    ({"lora": {"rank": 0}}, "lora.rank must be a positive integer, got 0"),
    ({"lora": {"rank": "8"}}, "lora.rank must be an integer, got '8'"),
    ({"lora": {"rnak": 4}}, "unknown key 'lora.rnak'; did you mean lora.rank?"),
    ({"lora": {"scope": "everything"}}, "lora.scope must be one of ['none', 'qv', 'all'], got 'everything'"),
    ({"lora": {"dropout": 1.5}}, "lora.dropout must be in [0, 1), got 1.5"),
    ({"realign": {"batch_size": 30, "grad_accum": 4}}, "realign.batch_size (30) must be divisible by realign.grad_accum (4)"),
    ({"languages": {"use": ["en", "xx"]}}, "unknown language code 'xx'"),
    ({"languages": {"use": ["en", "dee"]}}, "Did you mean de"),
    ({"languages": {"use": ["en", "de", "en"]}}, "lists a language twice"),
    ({"warmup": {"enabled": "yes"}}, "warmup.enabled must be true or false, got 'yes'"),
    ({"taskmix": {"tasks": ["caption", "ocr"]}}, "unknown task(s) ['ocr']"),
    ({"world": {"max_objects": 5}}, "world.max_objects must be 1, 2 or 3"),
    ({"models": {"quantization": "3bit"}}, "models.quantization must be one of ['none', '8bit', '4bit']"),
    ({"bogus": 1}, "unknown key 'bogus'"),
])
def test_bad_values_name_key_value_and_allowed(tmp_path, override, needle):
    d = base()
    for k, v in override.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) and isinstance(d.get(k), dict) else v
    with pytest.raises(C.ConfigError) as e:
        C.load(write(tmp_path, d))
    assert needle in str(e.value)
    assert "params.yaml" in str(e.value)


def test_unknown_preset_and_bad_yaml(tmp_path):
    with pytest.raises(C.ConfigError, match=r"preset must be one of \['demo', 'paper-mt0xl', 'paper-bloomz7b'\], got 'paper-mt0'"):
        C.load(write(tmp_path, base() | {"preset": "paper-mt0"}))
    p = tmp_path / "params.yaml"
    p.write_text("lora: [rank: 8\n")
    with pytest.raises(C.ConfigError, match="not valid YAML"):
        C.load(p)


def test_yaml_float_without_dot_is_accepted(tmp_path):
    # YAML 1.1 reads `1e-5` as a string; a researcher writing it must not get a type error.
    d = base()
    d["realign"] = {**d["realign"], "lr_lora": "1e-5"}
    assert C.load(write(tmp_path, d)).realign.lr_lora == 1e-5


def test_every_field_has_a_docstring():
    rows = C.describe()
    assert len(rows) > 30
    missing = [k for k, _, text in rows if not text.strip()]
    assert not missing, f"fields without a docstring: {missing}"


def test_every_params_section_exists_in_schema_and_presets_are_valid():
    import dataclasses
    names = {f.name for f in dataclasses.fields(C.Config)}
    assert set(base()) <= names
    # params.yaml lists every section so DVC can track overrides of any of them
    assert names <= set(base()), f"sections missing from params.yaml: {names - set(base())}"
