"""Stage glue for the model side: cached ViT features, warm-up, re-alignment, merge, and a `generate` for the
evaluators. The graft itself is `mblip.model`, the loop `mblip.train`; this module wires them to the config and
to the task mix on disk.

The frozen ViT is run once per image (`features`): its last hidden states are cached in
``artifacts/features/`` and every later stage reads them instead of pixels (BLIP-2's vision encoder is frozen
throughout mBLIP, so this changes nothing but the cost).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import torch

from mblip.config import Config
from mblip.stages import _root, cpu_threads, data_dir, model_path, write_json

log = logging.getLogger("mblip")


# ------------------------------------------------------------------------------------------------ features
def vision_encoder(blip2_ref: str, revision: str | None = None):
    """BLIP-2's vision tower (+ its image processor), reading only the ``vision_model.*`` tensors."""
    from transformers import AutoConfig, Blip2VisionModel

    from mblip.model import _image_processor, _read_tensors
    cfg = AutoConfig.from_pretrained(blip2_ref, revision=revision)
    vit = Blip2VisionModel(cfg.vision_config)
    wanted = {f"vision_model.{k}" for k in vit.state_dict()}
    tensors = _read_tensors(blip2_ref, revision, wanted)
    missing = wanted - set(tensors)
    if missing:
        raise ValueError(f"{blip2_ref}: vision weights missing ({sorted(missing)[:3]} ...)")
    vit.load_state_dict({k.removeprefix("vision_model."): v for k, v in tensors.items()})
    return vit.eval(), _image_processor(blip2_ref, revision, cfg.vision_config.image_size)


@torch.no_grad()
def compute_features(cfg: Config, batch_size: int = 256) -> dict:
    """ViT last hidden states of every image under the data folder -> ``artifacts/features/``."""
    from safetensors.torch import save_file

    root = _root(cfg)
    images = sorted(p.relative_to(data_dir(cfg)).as_posix() for p in (data_dir(cfg) / "images").glob("*.png"))
    if not images:
        raise FileNotFoundError(f"no images in {data_dir(cfg) / 'images'}: run `mblip fetch`")
    vit, proc = vision_encoder(model_path(cfg, cfg.models.blip2), cfg.models.revisions.get(cfg.models.blip2))
    feats = _vit_features(vit, proc, [data_dir(cfg) / rel for rel in images], batch_size, progress=True)
    out = root / "artifacts/features"
    out.mkdir(parents=True, exist_ok=True)
    save_file({"features": feats.contiguous()}, str(out / "vit.safetensors"))
    (out / "index.json").write_text(json.dumps(images, indent=0) + "\n")
    return {"images": len(images), "shape": list(feats.shape)}


@torch.no_grad()
def _vit_features(vit, proc, paths: Sequence[Path], batch_size: int, progress: bool = False) -> torch.Tensor:
    """(N, S, D) fp16 ViT last hidden states of image files, RGB through BLIP-2's image processor."""
    from PIL import Image, UnidentifiedImageError
    from tqdm.auto import tqdm

    chunks = []
    for i in tqdm(range(0, len(paths), batch_size), desc="ViT features", unit="batch", disable=not progress):
        ims = []
        for path in paths[i:i + batch_size]:
            try:
                with Image.open(path) as im:
                    ims.append(im.convert("RGB"))
            except UnidentifiedImageError:
                raise ValueError(f"{path}: not an image file PIL can read (PNG, JPEG, ...)") from None
        px = proc(images=ims, return_tensors="pt")["pixel_values"]
        chunks.append(vit(pixel_values=px).last_hidden_state.to(torch.float16))
    return torch.cat(chunks)


def features_for_images(cfg: Config, paths: Sequence[str | Path], batch_size: int = 64) -> torch.Tensor:
    """(N, S, D) ViT features of any image files (PNG, JPEG, any size): the frozen vision encoder and image
    processor of ``models.blip2``, exactly as the features stage computes them for the world's images (fp16-rounded,
    returned as float32 like `Features`), so a world image gives its cached features."""
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such image file")
    vit, proc = vision_encoder(model_path(cfg, cfg.models.blip2), cfg.models.revisions.get(cfg.models.blip2))
    return _vit_features(vit, proc, paths, batch_size).float()


class FileFeatures:
    """Like `Features`, for arbitrary image files: computed once with `features_for_images`, looked up by path."""

    def __init__(self, cfg: Config, paths: Sequence[str | Path], batch_size: int = 64):
        paths = list(dict.fromkeys(Path(p) for p in paths))
        self.index = {p: i for i, p in enumerate(paths)}
        self.tensor = features_for_images(cfg, paths, batch_size)

    def __call__(self, image: str | Path) -> torch.Tensor:
        try:
            return self.tensor[self.index[Path(image)]]
        except KeyError:
            raise KeyError(f"no features computed for image {image!r}") from None


class Features:
    """Cached ViT features by image path (relative to the data folder, as the task mix and eval files name them)."""

    def __init__(self, root: Path):
        from safetensors.torch import load_file
        path = root / "artifacts/features/vit.safetensors"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run the features stage (`dvc repro features`)")
        self.tensor = load_file(str(path))["features"]
        names = json.loads((root / "artifacts/features/index.json").read_text())
        self.index = {n: i for i, n in enumerate(names)}

    def __call__(self, image: str | Path) -> torch.Tensor:
        key = Path(image).as_posix()
        if key not in self.index:  # eval files name images by file name or id, relative to images/
            key = f"images/{Path(image).name}"
            if not key.endswith(".png"):
                key += ".png"
        try:
            return self.tensor[self.index[key]].float()
        except KeyError:
            raise KeyError(f"no cached features for image {image!r}: was it fetched, and the features stage rerun?") from None


# ------------------------------------------------------------------------------------------------ data
def as_example(record: dict, feats: Features) -> dict:
    """A task-mix record ``{id, image, lang, task, prompt, target}`` as a training example with its cached features."""
    return {"image_embeds": feats(record["image"]), "prompt": record["prompt"], "target": record["target"],
            "lang": record["lang"], "task": record["task"]}


def mix_examples(root: Path, feats: Features, split: str = "train", tasks: Sequence[str] | None = None) -> list[dict]:
    """Task-mix records (``artifacts/taskmix/<split>/``) as training examples with their cached features."""
    folder = root / "artifacts/taskmix" / split
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no task mix in {folder}: run the taskmix stage")
    out = []
    for f in files:
        if tasks is not None and f.stem not in tasks:
            continue
        with open(f, encoding="utf-8") as fh:
            out += [as_example(json.loads(line), feats) for line in fh]
    return out


# ------------------------------------------------------------------------------------------------ models
def build(cfg: Config, stage: str, seed: int | None = None):
    from mblip.model import build_mblip
    cpu_threads()
    m = cfg.models
    return build_mblip(model_path(cfg, m.blip2), model_path(cfg, m.llm), projection=m.projection,
                       quantization=m.quantization, lora_rank=cfg.lora.rank, lora_alpha=cfg.lora.alpha,
                       lora_dropout=cfg.lora.dropout, lora_scope=cfg.lora.scope if stage != "warmup" else "none",
                       stage=stage, train_qformer=cfg.realign.train_qformer, qformer_init=cfg.realign.qformer_init,
                       blip2_revision=m.revisions.get(m.blip2), llm_revision=m.revisions.get(m.llm),
                       seed=cfg.seed if seed is None else seed)


def _train(cfg: Config, model, examples, opt, out_dir: Path, name: str, *, lr_qformer, lr_lora, lr_projection=None,
           seed: int | None = None, history_path: Path | None = None, metrics_path: Path | None = None,
           num_images: int = 1, keep_checkpoints: int = 2, resume: bool = True):
    from mblip.train import Collator, train
    root = _root(cfg)
    collate = Collator.for_model(model, max_len=opt.max_len, num_images=num_images)
    return train(model, examples, collate=collate, batch_size=opt.batch_size,
                 steps=opt.steps, lr_qformer=lr_qformer, lr_lora=lr_lora, lr_projection=lr_projection,
                 weight_decay=opt.weight_decay, warmup_steps=opt.warmup_steps, grad_accum=opt.grad_accum,
                 clip=opt.clip, out_dir=out_dir, ckpt_every=opt.ckpt_every, seed=cfg.seed if seed is None else seed,
                 keep_checkpoints=keep_checkpoints, resume=resume,
                 history_path=history_path or root / f"plots/{name}_history.csv",
                 metrics_path=metrics_path or root / f"metrics/{name}.json")


def warmup(cfg: Config) -> dict:
    """Stage 1 (optional): train only the projection, on captions (the authors: translated Web CapFilt)."""
    root = _root(cfg)
    out = root / "models/warmup"
    if not cfg.warmup.enabled:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "skipped.json", {"reason": "warmup.enabled is false"})
        write_json(root / "metrics/warmup.json", {"enabled": False})
        (root / "plots").mkdir(exist_ok=True)  # an empty curve keeps the stage's declared plot
        (root / "plots/warmup_history.csv").write_text("step,loss,lr_qformer,lr_lora,examples_per_s\n")
        return {"enabled": False}
    feats = Features(root)
    examples = mix_examples(root, feats, "train", tasks=["caption"])
    model = build(cfg, "warmup")
    hist = _train(cfg, model, examples, cfg.warmup, out, "warmup", lr_qformer=cfg.warmup.lr, lr_lora=cfg.warmup.lr,
                  lr_projection=cfg.warmup.lr)
    return {"enabled": True, "examples": len(examples), "final_loss": hist[-1]["loss"] if hist else None}


def load_warmup_projection(cfg: Config, model) -> bool:
    """Copy the warmed-up projection into a realign model (the warm-up checkpoint holds only the projection)."""
    from safetensors.torch import load_file
    f = _root(cfg) / "models/warmup/final/trainable.safetensors"
    if not cfg.warmup.enabled or not f.exists():
        return False
    tensors = load_file(str(f))
    params = dict(model.blip2.named_parameters())
    with torch.no_grad():
        for name, t in tensors.items():
            if name not in params:
                raise KeyError(f"{f}: {name} is not a parameter of the realign model")
            params[name].copy_(t)
    return True


def realign(cfg: Config, *, out_dir: Path | None = None, seed: int | None = None, steps: int | None = None,
            name: str = "realign", keep_checkpoints: int = 2, examples: list[dict] | None = None,
            metrics_path: Path | None = None, history_path: Path | None = None) -> dict:
    """Stage 2: Q-Former + query tokens + projection fully, the LLM with LoRA, on the task mix.

    Ablations pass their own `examples` (default: the task mix on disk), step budget, output folder and run `name`
    (which names plots/<name>_history.csv and, unless `metrics_path` says otherwise, metrics/<name>.json)."""
    root = _root(cfg)
    if examples is None:
        examples = mix_examples(root, Features(root), "train")
    model = build(cfg, "realign", seed=seed)
    warmed = load_warmup_projection(cfg, model) if cfg.realign.qformer_init == "bootstrap" else False
    opt = cfg.realign if steps is None else type(cfg.realign)(**{**cfg.realign.__dict__, "steps": steps})
    out = out_dir or root / "models/realign"
    hist = _train(cfg, model, examples, opt, out, name, lr_qformer=cfg.realign.lr_qformer, lr_lora=cfg.realign.lr_lora,
                  seed=seed, history_path=history_path or root / f"plots/{name}_history.csv",
                  metrics_path=metrics_path or root / f"metrics/{name}.json", keep_checkpoints=keep_checkpoints)
    return {"model": model, "examples": len(examples), "warm_projection": warmed, "history": hist}


def merge(cfg: Config) -> dict:
    """Fold the realign LoRA into the LLM and write a plain BLIP-2 folder (the authors merge before fine-tuning)."""
    from mblip.model import load_mblip
    root = _root(cfg)
    model = load_mblip(root / "models/realign/final", quantization="none")
    folder = model.export(root / "models/merged")
    return {"folder": str(folder)}


# ------------------------------------------------------------------------------------------------ generation
def make_generate(model, feats: Features, batch_size: int = 64):
    """An evaluator `generate(images, prompts, decoding)` for a trained MBlip on cached features."""
    from mblip.train import Collator

    def generate(images: list[list[Path]], prompts: list[str], decoding) -> list[str]:
        k = len(images[0])
        collate = Collator.for_model(model, num_images=k, generate=True)
        out: list[str] = []
        model.eval()
        for i in range(0, len(prompts), batch_size):
            exs = [{"image_embeds": torch.stack([feats(p) for p in ims]) if k > 1 else feats(ims[0]), "prompt": pr}
                   for ims, pr in zip(images[i:i + batch_size], prompts[i:i + batch_size])]
            batch = collate(exs)
            ids = model.generate(**{k_: v for k_, v in batch.items() if k_ != "labels"}, **decoding.generate_kwargs())
            out += model.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return [o.strip() for o in out]
    return generate


# ------------------------------------------------------------------------------------------------ evaluate
def trained_models(cfg: Config) -> list[str]:
    """What `load_model` can load: the folders under ``models/`` with a ``final/`` checkpoint or a full BLIP-2."""
    models = _root(cfg) / "models"
    found = {p.parent.parent for p in models.glob("**/final/build.json")} | \
            {p.parent for p in models.glob("**/config.json") if (p.parent / "tokenizer_config.json").exists()
             and json.loads(p.read_text()).get("model_type") == "blip-2"}
    return sorted(p.relative_to(models).as_posix() for p in found if "standins" not in p.relative_to(models).parts)


def load_model(cfg: Config, which: str = "realign"):
    """A trained model by its folder under ``models/``: the zero-shot model (``realign``), the merged one
    (``merged``, a plain BLIP-2 folder), a fine-tuned one (``finetune/<task>``, also spelled ``finetune-<task>``
    as in ``metrics/eval/``) or your own (``own``: `mblip.own.finetune_own`); from its ``final/`` trainable weights."""
    from mblip.model import load_blip2_folder, load_mblip
    cpu_threads()
    models = _root(cfg) / "models"
    name = which.strip("/").removeprefix("models/")
    if not (models / name).exists() and name.startswith("finetune-"):
        name = "finetune/" + name.removeprefix("finetune-")
    folder = models / name
    if (folder / "final").exists():
        return load_mblip(folder / "final", quantization=cfg.models.quantization)
    if (folder / "config.json").exists():  # merged: a full BLIP-2 folder (our export)
        return load_blip2_folder(folder, stage="eval", quantization=cfg.models.quantization)
    raise FileNotFoundError(f"{folder / 'final'} is missing: run the {name.split('/')[0]} stage first "
                            f"(trained models here: {', '.join(trained_models(cfg)) or 'none'})")


def evaluate(cfg: Config, bench: str, which: str = "realign", model=None):
    """Run one benchmark's evaluator on a trained model; metrics -> ``metrics/eval/<which>/<bench>.json``,
    per-language rows -> ``plots/eval/<which>/<bench>.csv``, predictions kept in ``artifacts/eval/``."""
    model = model or load_model(cfg, which)
    gen = make_generate(model, Features(_root(cfg)), batch_size=cfg.eval.batch_size)
    return run_eval(cfg, bench, gen, which.replace("/", "-"))


def run_eval(cfg: Config, bench: str, generate, tag: str):
    """`mblip.evaluate.run` with the config's layout, languages, decoding, batch size and limit, recorded under
    `tag`: ``metrics/eval/<tag>/<bench>.json``, ``plots/eval/<tag>/<bench>.csv``, ``artifacts/eval/<tag>/<bench>/``."""
    from mblip import evaluate as E
    from mblip.stages import write_rows
    root = _root(cfg)
    decoding = {"num_beams": cfg.eval.num_beams} if cfg.eval.num_beams else None
    result = E.run(bench, generate, data_dir(cfg), root / "artifacts/eval" / tag / bench, layout=cfg.eval.layout,
                   languages=cfg.eval.languages, decoding=decoding, batch_size=cfg.eval.batch_size, limit=cfg.eval.limit)
    write_json(root / "metrics/eval" / tag / f"{bench}.json",
               {"per_language": result.metrics["per_language"], "average": result.metrics["average"]})
    write_rows(root / "plots/eval" / tag / f"{bench}.csv", [{**r, "model": tag} for r in result.rows])
    return result


# ------------------------------------------------------------------------------------------------ finetune
# English training data of each fine-tuning task, per file layout (protocol §8.4).
FINETUNE_DATA = {
    "demo": {"xgqa": "eval/gqa/train.json", "xvnli": "eval/xvnli/en/train.jsonl", "marvl": "eval/nlvr2/train.jsonl"},
    "paper": {"xgqa": "iglue/gqa/annotations/train.json", "xvnli": "iglue/XVNLI/annotations/en/train.jsonl",
              "marvl": "iglue/nlvr2/annotations/train.jsonl"},
}
FINETUNE_IMAGES = {"demo": {"xgqa": "images", "xvnli": "images", "marvl": "images"},
                   "paper": {"xgqa": "gqa/images", "xvnli": "flickr30k/images", "marvl": "nlvr2/images/train"}}


def finetune_examples(cfg: Config, task: str, feats: Features) -> tuple[list[dict], int]:
    """English training examples of a fine-tuning task with the protocol's prompts; returns (examples, images)."""
    from mblip import templates as T
    from mblip.taskmix import read_jsonl
    layout = cfg.eval.layout
    path = data_dir(cfg) / FINETUNE_DATA[layout][task]
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: `mblip fetch` provides the English {task} training data")
    img = FINETUNE_IMAGES[layout][task]
    if task == "xgqa":
        rows = json.loads(path.read_text(encoding="utf-8"))
        ex = [{"image_embeds": feats(f"{img}/{r['img_id']}.png"), "prompt": T.eval_prompt("xgqa", r["sent"]),
               "target": max(r["label"], key=r["label"].get)} for r in rows if r.get("label")]
        return ex, 1
    rows = read_jsonl(path)
    if task == "xvnli":
        ex = []
        for r in rows:
            label = (r.get("annotator_labels") or [r["gold_label"]])[0]
            if label in T.XVNLI_LABELS:  # '-' rows have no gold label (protocol: skipped)
                ex.append({"image_embeds": feats(f"{img}/{r['Flikr30kID']}.png"),
                           "prompt": T.eval_prompt("xvnli", r["sentence2"]), "target": T.XVNLI_LABELS[label]})
        return ex, 1
    ex = [{"image_embeds": torch.stack([feats(f"{img}/{r['left_img']}"), feats(f"{img}/{r['right_img']}")]),
           "prompt": T.eval_prompt("marvl", r["sentence"]), "target": T.MARVL_LABELS[str(r["label"])]} for r in rows]
    return ex, 2


def finetune(cfg: Config, task: str) -> dict:
    """Stage 3: merged realign model + a new LoRA, English training data of `task`, then zero-shot cross-lingual
    evaluation of the fine-tuned model on the task's benchmark in every language."""
    import math

    root = _root(cfg)
    ft = cfg.finetune
    if task not in ft.tasks:
        raise KeyError(f"finetune task {task!r} is not in finetune.tasks {ft.tasks}")
    feats = Features(root)
    examples, k = finetune_examples(cfg, task, feats)
    model = merged_for_finetune(cfg)
    batch = ft.batch_size[task]
    steps = max(1, math.ceil(ft.epochs[task] * len(examples) / batch))
    if ft.max_steps:
        steps = min(steps, ft.max_steps)
    _train(cfg, model, examples, _finetune_optim(cfg, batch, steps), root / "models/finetune" / task,
           f"finetune_{task}", lr_qformer=ft.lr[task], lr_lora=ft.lr[task], num_images=k)
    result = evaluate(cfg, task, which=f"finetune/{task}", model=model)
    return {"examples": len(examples), "steps": steps, "metrics": result.metrics}


def merged_for_finetune(cfg: Config):
    """The merged re-aligned model (``models/merged``) with a new LoRA, ready to fine-tune (protocol §8.4)."""
    from mblip.model import load_blip2_folder
    cpu_threads()
    folder = _root(cfg) / "models/merged"
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder} is missing: run the merge stage first (`dvc repro merge`)")
    return load_blip2_folder(folder, stage="finetune", quantization=cfg.models.quantization,
                             lora_rank=cfg.lora.rank, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                             lora_scope=cfg.lora.scope if cfg.lora.scope != "none" else "all", seed=cfg.seed)


def _finetune_optim(cfg: Config, batch: int, steps: int, micro_batch: int | None = None,
                    warmup_steps: int | None = None):
    from mblip.config import Optim
    ft = cfg.finetune
    micro = micro_batch or ft.micro_batch_size
    return Optim(batch_size=batch, grad_accum=batch // micro, steps=steps,
                 warmup_steps=ft.warmup_steps if warmup_steps is None else warmup_steps,
                 weight_decay=ft.weight_decay, clip=ft.clip, max_len=ft.max_len, ckpt_every=ft.ckpt_every)
