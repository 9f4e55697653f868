"""`params.yaml` -> typed, validated configuration.

Three layers, later ones win:

1. the defaults below: the paper's protocol values (`../reference/mblip-protocol.md`), one docstring each;
2. the preset `mblip/presets/<preset>.yaml`: what changes with *scale* (model ids, sizes, steps, batch sizes);
3. `params.yaml`: the experiment (what an ablation changes). ``dvc exp run -S lora.rank=16`` edits this layer,
   so it works in any preset; ``-S preset=paper-mt0xl`` switches the scale.

Any key of any section may be overridden in `params.yaml` (``dvc exp run -S +realign.steps=500`` adds one).
Every value is checked before any work starts; an error names the file, the key, the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

PRESETS = ("demo", "paper-mt0xl", "paper-bloomz7b")


class ConfigError(ValueError):
    """A bad value in params.yaml or a preset; the message names the key and the fix."""


def doc(text: str, default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING):
    """A dataclass field carrying its one-line docstring (shown by ``python -m mblip config``)."""
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"doc": text})
    return field(default=default, metadata={"doc": text})


# --------------------------------------------------------------------------------------------- sections
@dataclass
class Data:
    source: Literal["demo", "paper"] = doc("Where `mblip fetch` gets data: render the demo world, or download the paper's sources.", "paper")
    root: str = doc("Folder of raw inputs (tracked by data.dvc).", "data")
    local: str | None = doc("A folder you already have with the paper's files (same layout); fetch links instead of downloading.", None)


@dataclass
class World:
    n_train: int = doc("Demo world: training scenes (task mix, stand-in pretraining, fine-tuning data).", 4000)
    n_val: int = doc("Demo world: validation scenes (model selection, training-loss validation).", 300)
    n_test: int = doc("Demo world: test scenes (the benchmark analogues).", 300)
    image_size: int = doc("Demo world: rendered image side in pixels.", 64)
    max_objects: int = doc("Demo world: at most this many objects per scene (1-3, one per column).", 3)

    def check(self, key):
        for name in ("n_train", "n_val", "n_test", "image_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{key}.{name} must be a positive integer, got {getattr(self, name)}")
        if not 1 <= self.max_objects <= 3:
            raise ConfigError(f"{key}.max_objects must be 1, 2 or 3 (one object per column), got {self.max_objects}")
        if self.image_size < 32:
            raise ConfigError(f"{key}.image_size must be >= 32 (objects become unrecognisable), got {self.image_size}")


@dataclass
class Languages:
    use: list[str] | None = doc("Language codes to train on (see mblip/data/languages.tsv); null = all 96 as in the paper.", None)
    assignment: Literal["mc4", "temperature"] = doc("mc4 = the authors' mC4-proportional slices; temperature = smoothed q ∝ p^(1/T).", "mc4")
    temperature: float = doc("T for assignment=temperature (T=1 equals mc4; larger T gives rare languages more data).", 1.0)

    def check(self, key):
        from mblip import languages as L
        if self.use is not None:
            if not self.use:
                raise ConfigError(f"{key}.use must list at least one language code or be null (all 96), got []")
            for c in self.use:
                if c not in L.table():
                    raise ConfigError(f"{key}.use: {L.unknown_code_message(c, L.table())}")
            if len(set(self.use)) != len(self.use):
                raise ConfigError(f"{key}.use lists a language twice: {self.use}")
        if not self.temperature > 0:
            raise ConfigError(f"{key}.temperature must be > 0, got {self.temperature}")


@dataclass
class Models:
    blip2: str = doc("BLIP-2 checkpoint (hub id or folder) whose ViT + Q-Former (+ projection) are grafted.", "Salesforce/blip2-flan-t5-xl")
    llm: str = doc("The multilingual LLM (hub id or folder): any HF seq2seq or causal LM.", "bigscience/mt0-xl")
    translator: str = doc("NLLB-interface translation model (hub id or folder).", "facebook/nllb-200-distilled-1.3B")
    revisions: dict[str, str] = doc("Pinned hub revisions per model id (commit sha); folders need none.", factory=dict)
    quantization: Literal["none", "8bit", "4bit"] = doc("LLM weights in 8-bit (LLM.int8) or 4-bit NF4 via bitsandbytes; GPU only, CPU runs unquantised.", "8bit")
    projection: Literal["reuse", "new", "align"] = doc("Reuse BLIP-2's projection when LLM width matches (mT0-XL), else a fresh one (BLOOMZ); align = BLIP-2's followed by a least-squares map between the two LLMs' embeddings over shared tokens (mblip.projection, our addition).", "reuse")


STANDINS = ("vit", "flan_t5", "blip2", "mt0", "bloomz", "nllb")


def _known(where: str, values, allowed: list, noun: str = "") -> None:
    """Raise a ConfigError naming the values (or dict keys) of `where` that are not in `allowed`."""
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ConfigError(f"{where}: unknown {noun}{bad}; allowed: {allowed}")


@dataclass
class Standins:
    """The demo's pretrained parts, trained by the `standins` stage (mblip/demo/standins/)."""
    train: bool = doc("Train the stand-ins (demo); false = models.* are hub ids and the stage only records them.", False)
    steps: dict[str, int] = doc(f"Optimizer steps per stand-in, overriding the defaults; keys from {STANDINS}.", factory=dict)
    d_model: int = doc("Width of every stand-in LM (equal widths let realign reuse BLIP-2's projection).", 64)
    text_scenes: int | None = doc("Train-split scenes whose text the stand-in LMs learn from (no images); null = 3 x world.n_train.", None)
    vit_hidden: int = doc("Width of the stand-in ViT.", 64)
    n_eval: int = doc("Held-out scenes each stand-in is scored on.", 60)
    nli_share: float = doc("Share of XVNLI-style hypotheses in the multilingual LMs' instruction data (xP3 holds XNLI); "
                           "0.15 makes English-only XVNLI fine-tuning transfer (README, The stand-ins).", 0.0)
    pair_share: float = doc("Share of batches of MaRVL-style two-scene statements in the multilingual LMs' instruction data.", 0.0)
    match_heads: bool = doc("Start the English LM with duplicate-token attention heads.", False)
    aligned_words: bool = doc("Start the multilingual \"mT0\" with every language's colour / shape / size / position words "
                              "near the scene description's word, and with duplicate-token attention heads.", False)
    blip2_query_tokens: int = doc("Query tokens of the English \"BLIP-2\" (the paper's BLIP-2 has 32); realign keeps them.", 8)
    blip2_text_target: float = doc("Weight of the English \"BLIP-2\"'s scene-description target: query k is also pulled to "
                                   "the LM's embedding of the description's token k (README, The stand-ins); 0 = LM loss only.", 0.0)

    def check(self, key):
        _known(f"{key}.steps", self.steps, list(STANDINS), "stand-in(s) ")
        if self.nli_share < 0 or self.pair_share < 0 or self.nli_share + self.pair_share >= 1:
            raise ConfigError(f"{key}: nli_share and pair_share must be >= 0 and sum to less than 1 (captions and VQA "
                              f"need the rest), got {self.nli_share} and {self.pair_share}")
        if any(v < 1 for v in self.steps.values()) or self.d_model < 8 or self.vit_hidden < 8 \
                or (self.text_scenes is not None and self.text_scenes < 1) or self.blip2_query_tokens < 1:
            raise ConfigError(f"{key}: steps, text_scenes and blip2_query_tokens must be positive and "
                              f"d_model/vit_hidden >= 8")
        if self.blip2_text_target < 0:
            raise ConfigError(f"{key}.blip2_text_target must be >= 0 (0 = LM loss only), got {self.blip2_text_target}")


@dataclass
class Lora:
    rank: int = doc("LoRA rank r of the LLM adapters.", 8)
    alpha: int = doc("LoRA alpha (scaling alpha/r).", 16)
    dropout: float = doc("LoRA dropout.", 0.05)
    scope: Literal["none", "qv", "all"] = doc("Which LLM linears get LoRA: none, attention q/v only, or all (the authors' lora_all).", "all")

    def check(self, key):
        if self.rank < 1:
            raise ConfigError(f"{key}.rank must be a positive integer, got {self.rank} (use lora.scope: none to switch LoRA off)")
        if self.alpha < 1:
            raise ConfigError(f"{key}.alpha must be a positive integer, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{key}.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class Optim:
    """Shared by the training stages (warmup, realign, finetune)."""
    batch_size: int = doc("Examples per optimizer step (all devices, after accumulation).", 128)
    grad_accum: int = doc("Micro-batches per optimizer step; batch_size must divide by it.", 16)
    steps: int = doc("Optimizer steps.", 80000)
    warmup_steps: int = doc("Linear LR warm-up steps before the cosine decay.", 1000)
    weight_decay: float = doc("AdamW weight decay (not on biases and norms).", 0.1)
    clip: float = doc("Gradient-norm clipping.", 1.0)
    max_len: int = doc("Max tokens of prompt and of target (truncated).", 128)
    ckpt_every: int = doc("Save a resumable checkpoint every this many steps.", 1000)

    def check(self, key):
        for name in ("batch_size", "grad_accum", "steps", "max_len", "ckpt_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{key}.{name} must be a positive integer, got {getattr(self, name)}")
        if self.batch_size % self.grad_accum:
            raise ConfigError(f"{key}.batch_size ({self.batch_size}) must be divisible by {key}.grad_accum "
                              f"({self.grad_accum}); e.g. batch_size: {self.batch_size - self.batch_size % self.grad_accum or self.grad_accum}")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.clip <= 0:
            raise ConfigError(f"{key}: warmup_steps and weight_decay must be >= 0 and clip > 0")


@dataclass
class Warmup(Optim):
    enabled: bool = doc("Run the projection-only warm-up stage before re-alignment (optional in the paper's v2).", True)
    lr: float = doc("LR of the projection during warm-up.", 5e-3)
    steps: int = doc("Warm-up optimizer steps.", 8000)


@dataclass
class Realign(Optim):
    qformer_init: Literal["bootstrap", "scratch"] = doc("bootstrap = BLIP-2's English-aligned Q-Former (the method); scratch = random init (ablation).", "bootstrap")
    train_qformer: bool = doc("Train Q-Former + query tokens (true in the paper); false = projection + LoRA only (ablation).", True)
    lr_qformer: float = doc("LR of Q-Former, query tokens and projection.", 1e-5)
    lr_lora: float = doc("LR of the LLM's LoRA weights.", 2e-4)
    steps: int = doc("Optimizer steps (paper: 2 epochs of the ~5.1M task mix at batch 128).", 80000)


@dataclass
class Translate:
    batch_size: int = doc("Sentences per translation batch (authors: 256).", 256)
    num_beams: int | None = doc("Beams; null = the model's default generation config (as the authors).", None)
    max_new_tokens: int = doc("Max generated tokens per sentence.", 128)


@dataclass
class Taskmix:
    translated: bool = doc("Translate the English task mix (the method); false = English-only data (ablation).", True)
    tasks: list[str] = doc("Tasks of the instruction mix (protocol §6).", factory=lambda: list(TASKS))
    released: str = doc("Paper data only: the authors' released, already translated mix (task_mix_v2_mt.json), as a "
                        "path relative to the data root (e.g. mblip-train/task_mix_v2_mt.json); the translate stage "
                        "then translates nothing and taskmix converts this file as it is (tasks and languages as the "
                        "authors made them). Empty = build the mix from the English sources.", "")

    def check(self, key):
        _known(f"{key}.tasks", self.tasks, list(TASKS), "task(s) ")
        if not self.tasks:
            raise ConfigError(f"{key}.tasks must list at least one task; allowed: {list(TASKS)}")
        if self.released and not self.translated:
            raise ConfigError(f"{key}.released ({self.released!r}) is the authors' translated mix, but "
                              f"{key}.translated is false (the English-only ablation needs the English sources): "
                              f"set {key}.released: '' or {key}.translated: true")


@dataclass
class Eval:
    benchmarks: list[str] = doc("Benchmarks of the evaluate@ stages (demo data has xgqa, xvnli, marvl, xm3600).", factory=lambda: ["xgqa", "xvnli", "marvl", "xm3600"])
    layout: Literal["demo", "paper"] = doc("File layout under data/: the demo world's or the official benchmarks'.", "paper")
    languages: list[str] | None = doc("Evaluate only these languages; null = each benchmark's own list.", None)
    limit: int | None = doc("Examples per language (null = all; a subset changes CIDEr's IDF: smoke tests only).", None)
    batch_size: int = doc("Examples per generate call.", 32)
    num_beams: int | None = doc("Override the protocol's beam width (5) for every benchmark; null = protocol.", None)

    def check(self, key):
        from mblip.evaluate import BENCHMARKS
        _known(f"{key}.benchmarks", self.benchmarks, sorted(BENCHMARKS))
        if self.batch_size < 1 or (self.limit is not None and self.limit < 1) or (self.num_beams is not None and self.num_beams < 1):
            raise ConfigError(f"{key}: batch_size, limit and num_beams must be positive integers")


FINETUNE_TASKS = ("xgqa", "xvnli", "marvl")


@dataclass
class Finetune:
    """Stage 3: per-task fine-tuning of the merged model with a new LoRA (protocol §8.4), English data only."""
    tasks: list[str] = doc("Tasks of the finetune@ stages.", factory=lambda: list(FINETUNE_TASKS))
    lr: dict[str, float] = doc("LR per task (protocol: xGQA 3e-5, XVNLI 1e-5, MaRVL 1e-5).", factory=lambda: {"xgqa": 3e-5, "xvnli": 1e-5, "marvl": 1e-5})
    epochs: dict[str, float] = doc("Epochs over the English training set per task (protocol: 5 / 10 / 20).", factory=lambda: {"xgqa": 5.0, "xvnli": 10.0, "marvl": 20.0})
    batch_size: dict[str, int] = doc("Examples per optimizer step per task (protocol: 256 / 128 / 128).", factory=lambda: {"xgqa": 256, "xvnli": 128, "marvl": 128})
    micro_batch_size: int = doc("Examples per forward pass; gradient accumulation = batch_size / micro_batch_size.", 16)
    max_steps: int | None = doc("Cap on optimizer steps per task (null = the epochs decide).", None)
    warmup_steps: int = doc("Linear LR warm-up steps.", 1000)
    weight_decay: float = doc("AdamW weight decay.", 0.1)
    clip: float = doc("Gradient-norm clipping.", 1.0)
    max_len: int = doc("Max tokens of prompt and target.", 128)
    ckpt_every: int = doc("Resumable checkpoint interval (steps).", 1000)

    def check(self, key):
        _known(f"{key}.tasks", self.tasks, list(FINETUNE_TASKS))
        for name in ("lr", "epochs", "batch_size"):
            missing = [t for t in self.tasks if t not in getattr(self, name)]
            if missing:
                raise ConfigError(f"{key}.{name} has no value for task(s) {missing}")
        for t, b in self.batch_size.items():
            if b < 1 or b % self.micro_batch_size:
                raise ConfigError(f"{key}.batch_size.{t} ({b}) must be a positive multiple of {key}.micro_batch_size ({self.micro_batch_size})")


TASKS = ("caption", "vqa", "vqg", "match", "classify", "verify", "describe", "conversation", "cot", "explain")

ABLATIONS = ("base", "lora_none", "lora_qv", "lora_r32", "qformer_frozen", "no_warmup", "scratch", "english_only",
             "captions_only")  # defined in mblip.ablations.VARIANTS


@dataclass
class Ablations:
    """The ablate@ stages: each variant re-aligns from the same starting point with one change, for the same number
    of steps, and is scored on the xGQA analogue (mblip/ablations.py). The ablate_init stage repeats bootstrap vs
    scratch over several seeds for learning curves."""
    variants: list[str] = doc(f"Variants of the ablate@ stages; allowed: {list(ABLATIONS)}.", factory=lambda: list(ABLATIONS))
    steps: int = doc("Re-alignment steps of every variant (one budget for all, so they compare).", 10000)
    eval_limit: int = doc("xGQA questions per language each variant is scored on (greedy decoding).", 500)
    init_seeds: list[int] = doc("Seeds of the bootstrap-vs-scratch learning curves (ablate_init).", factory=lambda: [0, 1, 2])
    init_budgets: int = doc("Points on each bootstrap-vs-scratch curve (evenly spaced up to steps).", 4)

    def check(self, key):
        _known(f"{key}.variants", self.variants, list(ABLATIONS))
        if self.steps < 1 or self.eval_limit < 1 or self.init_budgets < 1 or not self.init_seeds:
            raise ConfigError(f"{key}: steps, eval_limit and init_budgets must be positive and init_seeds non-empty")
        if self.steps % self.init_budgets:
            raise ConfigError(f"{key}.steps ({self.steps}) must be a multiple of {key}.init_budgets ({self.init_budgets})")



@dataclass
class Config:
    preset: str = doc(f"Scale preset: one of {PRESETS} (mblip/presets/<name>.yaml).", "demo")
    seed: int = doc("Global seed (data order, language assignment, init).", 42)
    data: Data = doc("Raw inputs.", factory=Data)
    world: World = doc("Demo world sizes (used when data.source is demo).", factory=World)
    languages: Languages = doc("Training languages and their assignment.", factory=Languages)
    models: Models = doc("Pretrained parts.", factory=Models)
    standins: Standins = doc("The demo's stand-in pretrained parts.", factory=Standins)
    lora: Lora = doc("LoRA on the LLM.", factory=Lora)
    warmup: Warmup = doc("Stage 1: projection warm-up.", factory=Warmup)
    realign: Realign = doc("Stage 2: re-alignment on the task mix.", factory=Realign)
    translate: Translate = doc("Machine translation of the English data.", factory=Translate)
    taskmix: Taskmix = doc("The instruction task mix.", factory=Taskmix)
    eval: Eval = doc("Evaluation (zero-shot and fine-tuned).", factory=Eval)
    finetune: Finetune = doc("Per-task fine-tuning.", factory=Finetune)
    ablations: Ablations = doc("Ablations as pipeline stages (ablate@variant, ablate_init).", factory=Ablations)

    def check(self, key):
        """Rules that span sections."""
        if self.taskmix.released and self.data.source != "paper":
            raise ConfigError(f"taskmix.released ({self.taskmix.released!r}) is the authors' mix of the paper's data, "
                              f"but data.source is {self.data.source!r}: set taskmix.released: '' to build the "
                              f"{self.data.source} mix, or use it with data.source: paper (e.g. preset paper-mt0xl)")

    # -- convenience
    @property
    def repo_root(self) -> Path:
        return find_root()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------- loading
def find_root(start: Path | None = None) -> Path:
    """The repository root: the nearest folder upwards holding dvc.yaml (papermill runs kernels in the
    caller's cwd, JupyterLab in the notebook's folder; both resolve paths through this)."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "dvc.yaml").exists() or (d / "params.yaml").exists():
            return d
    raise FileNotFoundError(f"no dvc.yaml or params.yaml found in {here} or any parent folder; "
                            "run from inside the mblip repository")


def preset_path(name: str) -> Path:
    return Path(str(resources.files("mblip").joinpath(f"presets/{name}.yaml")))


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}")
    return data


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _check_keys(raw: dict, cls: type, where: str, prefix: str = "") -> None:
    """Unknown keys are errors (a typo must not silently fall back to a default)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    for k, v in raw.items():
        key = f"{prefix}{k}"
        if k not in names:
            import difflib
            close = difflib.get_close_matches(str(k), names, n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else ""
            raise ConfigError(f"{where}: unknown key {key!r}{hint} Allowed here: {sorted(names)}")
        t = hints[k]
        if dataclasses.is_dataclass(t):
            if not isinstance(v, dict):
                raise ConfigError(f"{where}: {key} must be a mapping of keys, got {v!r}")
            _check_keys(v, t, where, prefix=f"{key}.")


def _coerce(value: Any, t: Any, key: str) -> Any:
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {list(args)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if t is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if t is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if t is float:
        if isinstance(value, str):  # YAML reads 1e-5 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if t is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(t):
        return _build(t, value, key)
    return value


def _build(cls: type, raw: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{'.' if prefix else ''}{k}") for k, v in raw.items()}
    obj = cls(**kwargs)
    if hasattr(obj, "check"):
        obj.check(prefix)
    return obj


def load(params_path: str | Path = "params.yaml", overrides: dict | None = None) -> Config:
    """Read params.yaml (+ its preset) into a validated `Config`. ``overrides`` (a nested dict) wins over both;
    the tests use it to shrink the demo."""
    params_path = Path(params_path)
    if not params_path.is_absolute() and not params_path.exists():
        params_path = find_root() / params_path
    params = _read_yaml(params_path)
    preset = (overrides or {}).get("preset", params.get("preset", "demo"))
    if preset not in PRESETS:
        raise ConfigError(f"{params_path}: preset must be one of {list(PRESETS)}, got {preset!r}")
    pre = _read_yaml(preset_path(preset))
    layers = [(f"mblip/presets/{preset}.yaml", pre), (str(params_path), params)]
    if overrides:
        layers.append(("overrides", overrides))
    merged: dict = {}
    for where, layer in layers:
        _check_keys(layer, Config, where)
        merged = _merge(merged, layer)
    try:
        return _build(Config, merged)
    except ConfigError as e:
        raise ConfigError(f"{params_path} (preset {preset}): {e}") from None


def describe(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, docstring) for every field: the reference printed by ``python -m mblip config``."""
    rows = []
    for f in fields(cls):
        t = typing.get_type_hints(cls)[f.name]
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(t):
            rows += describe(t, key + ".")
        else:
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else "")
            rows.append((key, repr(default), f.metadata.get("doc", "")))
    return rows
