"""One explicit training loop for the warmup, realign and finetune stages, with exact checkpoint/resume.

nanoGPT-shaped: set-up, then per optimizer step: micro-steps with gradient accumulation -> clip -> step -> log ->
checkpoint. Param groups carry their own LRs (protocol §8.2: Q-Former, query tokens and projection 1e-5, LoRA
2e-4), AdamW with weight decay except on biases and norms, cosine schedule after a linear warm-up.

A checkpoint (folder `step-NNNNNNNN` in `out_dir`, written under a temporary name and renamed, so a kill never
leaves half a checkpoint) holds the trainable weights (`MBlip.save_trainable`), the optimizer, the scheduler, the
data-order position and the RNG states; a killed run started again with the same arguments resumes from the last
one and, on a CPU, ends with bit-identical weights. `accelerate` does device placement, DDP gradient sync and
bf16 autocast, so `accelerate launch -m mblip ...` runs this unchanged; in one CPU process it is a no-op.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path

import torch

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ("step", "loss", "lr_qformer", "lr_lora", "examples_per_s")


# ---------------------------------------------------------------------------------------------------------------
# collation


class Collator:
    """Examples -> a model batch: `<image>` x (num_images * num_query) + prompt, labels from the target.

    An example is a dict with "prompt", "target" (not needed with generate=True) and the image(s) as one of
    "image_embeds" (cached ViT features, (S, D) or (K, S, D)), "pixel_values" ((C, H, W) or (K, C, H, W)) or
    "image" (a PIL image or a list of K). Seq2seq: the target becomes the decoder labels (+ EOS). Causal: input =
    prompt + target + EOS, labels = -100 on the image and prompt positions. Prompt and target are truncated to
    `max_len` tokens each (protocol §4); lengths are padded to a multiple of 8, labels with -100. Causal batches
    for generation are padded on the left, so that every prompt ends where generation starts.
    """

    def __init__(self, processor, *, decoder_only: bool, num_query_tokens: int | None = None, max_len: int = 128,
                 num_images: int = 1, generate: bool = False, pad_to_multiple_of: int = 8):
        if max_len < 2:
            raise ValueError(f"max_len must be at least 2 tokens, got {max_len}")
        if num_images < 1:
            raise ValueError(f"num_images must be a positive integer, got {num_images} (MaRVL uses 2)")
        self.processor, self.tokenizer = processor, processor.tokenizer
        self.num_query_tokens = num_query_tokens or processor.num_query_tokens
        self.image_token_id = self.tokenizer.convert_tokens_to_ids("<image>")
        self.decoder_only, self.max_len, self.num_images = decoder_only, max_len, num_images
        self.generate, self.multiple = generate, pad_to_multiple_of
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        if eos is None or pad is None:
            raise ValueError(f"the LLM tokenizer needs an EOS and a pad token, got eos={eos} pad={pad}")
        self.eos, self.pad = eos, pad

    @classmethod
    def for_model(cls, model, **kwargs) -> Collator:
        """A collator matching `model` (an MBlip): its processor, number of queries and LLM kind."""
        return cls(model.processor, decoder_only=model.decoder_only, num_query_tokens=model.num_query_tokens,
                   **kwargs)

    def _ids(self, text: str, special: bool, max_len: int) -> list[int]:
        return self.tokenizer(text, add_special_tokens=special, truncation=True, max_length=max_len).input_ids

    def _images(self, examples: list[dict]) -> dict:
        k = self.num_images
        for key in ("image_embeds", "pixel_values"):
            if key in examples[0]:
                tensors = [torch.as_tensor(ex[key]) for ex in examples]
                want = 3 if key == "pixel_values" else 2  # one image: (C, H, W) / (S, D)
                for i, t in enumerate(tensors):
                    if t.dim() != want + (k > 1) or (k > 1 and t.shape[0] != k):
                        raise ValueError(f"example {i}: {key} has shape {tuple(t.shape)}, expected "
                                         f"{'(K, ...) with K = num_images = %d' % k if k > 1 else f'{want} dims'}")
                return {key: torch.stack(tensors)}
        if "image" in examples[0]:
            images = [img for ex in examples for img in (ex["image"] if k > 1 else [ex["image"]])]
            pixels = self.processor.image_processor(images, return_tensors="pt").pixel_values
            return {"pixel_values": pixels.unflatten(0, (len(examples), k)) if k > 1 else pixels}
        raise ValueError(f"examples need 'image_embeds', 'pixel_values' or 'image'; got keys {sorted(examples[0])}")

    def __call__(self, examples: list[dict]) -> dict:
        image = [self.image_token_id] * (self.num_query_tokens * self.num_images)
        inputs, labels = [], []
        for i, ex in enumerate(examples):
            if not self.generate and ex.get("target") is None:
                raise ValueError(f"example {i} has no 'target'; use Collator(..., generate=True) for prompts only")
            prompt = image + self._ids(ex["prompt"], True, self.max_len)
            if self.generate:
                inputs.append(prompt)
            elif self.decoder_only:
                target = self._ids(ex["target"], False, self.max_len - 1) + [self.eos]
                inputs.append(prompt + target)
                labels.append([-100] * len(prompt) + target)
            else:
                target = self._ids(ex["target"], True, self.max_len)
                if target[-1:] != [self.eos]:  # the decoder must learn to stop
                    target = target[:self.max_len - 1] + [self.eos]
                inputs.append(prompt)
                labels.append(target)
        left = self.decoder_only and self.generate
        batch = {"input_ids": self._pad(inputs, self.pad, left),
                 "attention_mask": self._pad([[1] * len(x) for x in inputs], 0, left)}
        if labels:
            batch["labels"] = self._pad(labels, -100, left)
        batch.update(self._images(examples))
        return batch

    def _pad(self, rows: list[list[int]], value: int, left: bool) -> torch.Tensor:
        length = math.ceil(max(map(len, rows)) / self.multiple) * self.multiple
        padded = [[value] * (length - len(r)) + r if left else r + [value] * (length - len(r)) for r in rows]
        return torch.tensor(padded, dtype=torch.long)


# ---------------------------------------------------------------------------------------------------------------
# data order


class DataOrder:
    """Seeded, resumable order: epoch e is a permutation drawn from (seed, e); incomplete last batches are dropped.

    `next()` gives the dataset indices of this process's share of the next global micro-batch (process r takes
    every world-th index), so the order is the same whatever the number of processes.
    """

    def __init__(self, n: int, global_batch: int, seed: int, rank: int = 0, world: int = 1):
        if n < global_batch:
            raise ValueError(f"the dataset has {n} examples, fewer than one micro-batch of {global_batch} "
                             f"(batch_size / grad_accum); lower batch_size or add data")
        self.n, self.global_batch, self.seed, self.rank, self.world = n, global_batch, seed, rank, world
        self.epoch, self.position = 0, 0
        self._perm = None

    def _permutation(self) -> torch.Tensor:
        if self._perm is None:
            generator = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            self._perm = torch.randperm(self.n, generator=generator)
        return self._perm

    def next(self) -> list[int]:
        if (self.position + 1) * self.global_batch > self.n:
            self.epoch, self.position, self._perm = self.epoch + 1, 0, None
        start = self.position * self.global_batch
        self.position += 1
        return self._permutation()[start:start + self.global_batch][self.rank::self.world].tolist()

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "n": self.n, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if (state["n"], state["seed"]) != (self.n, self.seed):
            raise ValueError(f"checkpoint data order was for {state['n']} examples with seed {state['seed']}, "
                             f"now {self.n} with seed {self.seed}; resume with the same data and seed")
        self.epoch, self.position, self._perm = state["epoch"], state["position"], None


# ---------------------------------------------------------------------------------------------------------------
# optimizer


def param_groups(model, *, lr_qformer: float, lr_lora: float, lr_projection: float | None = None,
                 weight_decay: float = 0.1) -> list[dict]:
    """AdamW groups: qformer (+ query tokens), projection, lora; 1-D tensors (biases, norms) without decay."""
    from mblip.model import component

    lrs = {"qformer": lr_qformer, "projection": lr_qformer if lr_projection is None else lr_projection,
           "lora": lr_lora}
    groups: dict[tuple[str, bool], list] = {}
    for name, p in model.blip2.named_parameters():
        if not p.requires_grad:
            continue
        part = {"llm(lora)": "lora", "projection": "projection"}.get(component(name), "qformer")
        groups.setdefault((part, p.ndim >= 2), []).append(p)
    if not groups:
        raise ValueError(f"the model has no trainable parameters (stage={model.stage!r}); build it with a training "
                         f"stage (warmup, realign, finetune)")
    return [{"params": groups[part, decay], "lr": lrs[part], "weight_decay": weight_decay if decay else 0.0,
             "name": part if decay else f"{part}/no_decay"}
            for part in ("qformer", "projection", "lora") for decay in (True, False) if (part, decay) in groups]


def _group_lr(optimizer, part: str) -> float | None:
    return next((g["lr"] for g in optimizer.param_groups if g["name"].split("/")[0] == part), None)


# ---------------------------------------------------------------------------------------------------------------
# checkpoints


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step in `out_dir` (temporary folders are never complete)."""
    found = sorted(Path(out_dir).glob("step-*")) if Path(out_dir).is_dir() else []
    return found[-1] if found else None


def _rng_state() -> dict:
    np_state = _numpy_random().get_state() if _numpy_random() else None
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate(),
            "numpy": None if np_state is None else [np_state[0], torch.from_numpy(np_state[1].astype("int64")),
                                                     *np_state[2:]]}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
    if state["numpy"] is not None and _numpy_random():
        kind, keys, *rest = state["numpy"]
        _numpy_random().set_state((kind, keys.numpy().astype("uint32"), *rest))


def _numpy_random():
    try:
        import numpy
    except ImportError:
        return None
    return numpy.random


def _save_checkpoint(acc, model, optimizer, scheduler, order, step: int, out_dir: Path, run: dict,
                     keep: int) -> None:
    tmp, final = out_dir / f".tmp-step-{step:08d}", out_dir / f"step-{step:08d}"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    torch.save(_rng_state(), tmp / f"rng-{acc.process_index}.pt")  # each process has its own dropout stream
    acc.wait_for_everyone()
    if acc.is_main_process:
        acc.unwrap_model(model).save_trainable(tmp)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        state = {"step": step, "run": run, "order": order.state_dict(), "scheduler": scheduler.state_dict()}
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)  # atomic: a checkpoint folder is complete or absent
        for old in sorted(out_dir.glob("step-*"))[:-keep]:
            shutil.rmtree(old)
    acc.wait_for_everyone()


def _load_checkpoint(acc, model, optimizer, scheduler, order, ckpt: Path, run: dict) -> int:
    state = json.loads((ckpt / "trainer_state.json").read_text())
    changed = {k: (state["run"].get(k), v) for k, v in run.items() if state["run"].get(k) != v}
    if changed:
        raise ValueError(f"{ckpt} was written by a run with other settings {changed} (checkpoint, now); resume with "
                         f"the same arguments, or pass resume=False (or a fresh out_dir) to start over")
    acc.unwrap_model(model).load_trainable(ckpt)
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(state["scheduler"])
    order.load_state_dict(state["order"])
    rng = ckpt / f"rng-{acc.process_index}.pt"
    if rng.exists():
        _set_rng_state(torch.load(rng, weights_only=True))
    return state["step"]


def _read_history(path: Path, upto: int) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        rows = [{k: (float(v) if v not in ("", None) else None) for k, v in r.items()} for r in csv.DictReader(f)]
    for r in rows:
        r["step"] = int(r["step"])
    return [r for r in rows if r["step"] <= upto]


def _write_history(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


# ---------------------------------------------------------------------------------------------------------------
# the loop


def train(
    model,
    dataset: Sequence,
    *,
    collate: Callable[[list], dict] | None = None,
    batch_size: int = 128,
    steps: int,
    lr_qformer: float,
    lr_lora: float = 2e-4,
    lr_projection: float | None = None,
    weight_decay: float = 0.1,
    warmup_steps: int = 0,
    grad_accum: int = 1,
    clip: float = 1.0,
    bf16: bool | None = None,
    out_dir: str | Path,
    ckpt_every: int = 0,
    keep_checkpoints: int = 2,
    log_every: int = 10,
    seed: int = 0,
    resume: bool = True,
    history_path: str | Path | None = None,
    metrics_path: str | Path | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train `model` (an MBlip) for `steps` optimizer steps; returns the logged history rows.

    model: an `MBlip` whose stage decides what trains (warmup: projection; realign/finetune: + Q-Former, LoRA).
    dataset: indexable examples (len + [i]); with `collate=None` every item is already a collated batch.
    collate: examples -> batch, e.g. `Collator.for_model(model)`; None = items are batches.
    batch_size: examples per optimizer step over all processes and micro-steps (paper: 128).
    steps: optimizer steps; also the length of the cosine schedule.
    lr_qformer: peak LR of Q-Former + query tokens (+ projection unless lr_projection) (paper: 1e-5).
    lr_lora: peak LR of the LoRA weights (paper: 2e-4).
    lr_projection: peak LR of the projection; None = lr_qformer (warm-up stage: its own LR, e.g. 5e-3).
    weight_decay: AdamW decoupled weight decay, not applied to biases and norms (paper: 0.1).
    warmup_steps: linear LR warm-up steps before the cosine decay (paper: 1000).
    grad_accum: micro-steps per optimizer step; batch_size must divide by grad_accum x processes.
    clip: max gradient norm (paper: 1.0).
    bf16: bf16 autocast; None = on CUDA where supported, never on a CPU.
    out_dir: checkpoints, history.csv and metrics.json (unless history_path / metrics_path say otherwise).
    ckpt_every: save a resumable checkpoint every this many steps (0 = only at the end).
    keep_checkpoints: how many of the latest checkpoints to keep.
    log_every: log (progress bar, history row) every this many steps.
    seed: seeds the data order and the RNGs (dropout).
    resume: continue from the last checkpoint in out_dir; False deletes old checkpoints and starts over.
    history_path: long-format CSV, one row per logged step (step, loss, lr_qformer, lr_lora, examples_per_s).
    metrics_path: final metrics JSON (final loss, steps, examples, examples/s, wall time).
    progress: show a tqdm progress bar (main process only).
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    # --- set-up: checks, processes, data order, optimizer, schedule --------------------------------------
    for name, value, low in (("steps", steps, 1), ("grad_accum", grad_accum, 1), ("batch_size", batch_size, 1),
                             ("log_every", log_every, 1), ("keep_checkpoints", keep_checkpoints, 1),
                             ("ckpt_every", ckpt_every, 0), ("warmup_steps", warmup_steps, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise ValueError(f"dataset must support len() and indexing (a list, a datasets.Dataset...) so that its order "
                         f"can be seeded and resumed; got {type(dataset).__name__}")
    if bf16 is None:
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    # autocast is ours (below), not accelerate's: its mixed-precision setting is process-wide and cannot change
    # between two train() calls in one notebook kernel
    acc = Accelerator()
    world = acc.num_processes
    if batch_size % (grad_accum * world):
        raise ValueError(f"batch_size={batch_size} must divide by grad_accum x processes = {grad_accum} x {world}")
    micro = batch_size // (grad_accum * world)
    if collate is None and micro != 1:
        raise ValueError(f"with collate=None every dataset item is a batch, so batch_size must equal grad_accum x "
                         f"processes ({grad_accum * world}), got {batch_size}; or pass "
                         f"collate=Collator.for_model(model)")
    out_dir = Path(out_dir)
    history_path = Path(history_path) if history_path else out_dir / "history.csv"
    metrics_path = Path(metrics_path) if metrics_path else out_dir / "metrics.json"
    if acc.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        history_path.parent.mkdir(parents=True, exist_ok=True)
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
    stage, quantized = model.stage, model.quantized
    # what a checkpoint must agree with to be resumed exactly
    run = {"steps": steps, "batch_size": batch_size, "grad_accum": grad_accum, "processes": world, "seed": seed,
           "lr_qformer": lr_qformer, "lr_lora": lr_lora, "lr_projection": lr_projection,
           "weight_decay": weight_decay, "warmup_steps": warmup_steps, "stage": stage}

    random.seed(seed + acc.process_index)
    torch.manual_seed(seed + acc.process_index)
    if _numpy_random():
        _numpy_random().seed(seed + acc.process_index)
    order = DataOrder(len(dataset), micro * world, seed, acc.process_index, world)
    optimizer = torch.optim.AdamW(param_groups(model, lr_qformer=lr_qformer, lr_lora=lr_lora,
                                               lr_projection=lr_projection, weight_decay=weight_decay),
                                  betas=(0.9, 0.999), eps=1e-8)
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup_steps, steps)
    # a quantised LLM already sits on its GPU and must not be moved by accelerate
    model = acc.prepare_model(model, device_placement=not quantized)
    optimizer = acc.prepare_optimizer(optimizer)
    trainable = [p for g in optimizer.param_groups for p in g["params"]]

    step = 0
    ckpt = latest_checkpoint(out_dir)
    if ckpt is not None and not resume:
        log.warning("resume=False: deleting the old checkpoints in %s and starting over", out_dir)
        acc.wait_for_everyone()
        if acc.is_main_process:
            for old in out_dir.glob("step-*"):
                shutil.rmtree(old)
        ckpt = None
    if ckpt is not None:
        step = _load_checkpoint(acc, model, optimizer, scheduler, order, ckpt, run)
        log.info("resumed from %s (step %d of %d)", ckpt, step, steps)
    history = _read_history(history_path, step) if step else []

    def next_batch() -> dict:
        idx = order.next()
        batch = collate([dataset[i] for i in idx]) if collate is not None else dataset[idx[0]]
        return {k: v.to(acc.device) if torch.is_tensor(v) else v for k, v in batch.items()}

    # On a CPU, the softmax tails of a confident LM are denormal floats, which make the LM-head backward matmul
    # several times slower; flushing them to zero changes nothing measurable. Restored when training ends.
    flush = acc.device.type == "cpu" and torch.set_flush_denormal(True)
    bar = tqdm(total=steps, initial=step, desc=stage, unit="step", dynamic_ncols=True,
               disable=not (progress and acc.is_main_process))
    model.train()
    start = window_start = time.perf_counter()
    window_loss = torch.zeros((), device=acc.device)
    window_micro, examples, window_examples, first_step = 0, 0, 0, step
    try:
        while step < steps:
            # --- micro-steps: forward, backward; gradients sync across processes on the last one only ----------
            for i in range(grad_accum):
                batch = next_batch()
                sync = nullcontext() if i == grad_accum - 1 else acc.no_sync(model)
                with sync:
                    with torch.autocast(acc.device.type, dtype=torch.bfloat16, enabled=bf16):
                        loss = model(**batch).loss
                    acc.backward(loss / grad_accum)
                window_loss += loss.detach().float()  # a tensor: no GPU sync until we log
                window_micro += 1
                window_examples += batch["input_ids"].shape[0] * world
            # --- clip, step, schedule --------------------------------------------------------------------------
            if clip:
                acc.clip_grad_norm_(trainable, clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            # --- log: mean loss over the window (all processes), LRs, examples/s; also at checkpoints, so that
            # a resumed run logs the same windows as an uninterrupted one ------------------------------------
            if step % log_every == 0 or step == steps or (ckpt_every and step % ckpt_every == 0):
                mean = acc.reduce(window_loss / window_micro, reduction="mean").item()
                if not math.isfinite(mean):  # before it reaches a checkpoint
                    raise FloatingPointError(f"the loss is {mean} at step {step}; lower the learning rates, or use "
                                             f"bf16 rather than fp16 (the authors saw NaNs with fp16)")
                now = time.perf_counter()
                row = {"step": step, "loss": mean, "lr_qformer": _group_lr(optimizer, "qformer") or
                       _group_lr(optimizer, "projection"), "lr_lora": _group_lr(optimizer, "lora"),
                       "examples_per_s": window_examples / max(now - window_start, 1e-9)}
                history.append(row)
                examples += window_examples
                window_loss, window_micro, window_examples, window_start = torch.zeros_like(window_loss), 0, 0, now
                bar.set_postfix(loss=f"{mean:.4f}", ex_s=f"{row['examples_per_s']:.1f}")
                if acc.is_main_process:
                    _write_history(history_path, history)
            # --- checkpoint -----------------------------------------------------------------------------------
            if step == steps or (ckpt_every and step % ckpt_every == 0):
                _save_checkpoint(acc, model, optimizer, scheduler, order, step, out_dir, run, keep_checkpoints)
    finally:
        if flush:
            torch.set_flush_denormal(False)
        bar.close()

    # --- the stage's result: trainable weights + final metrics --------------------------------------------
    wall = time.perf_counter() - start
    if acc.is_main_process:
        acc.unwrap_model(model).save_trainable(out_dir / "final")
        metrics = {"steps": steps, "steps_this_run": step - first_step, "final_loss": history[-1]["loss"] if history
                   else None, "examples_this_run": examples, "wall_s": round(wall, 3),
                   "examples_per_s": examples / wall if wall > 0 and examples else None}
        metrics_path.write_text(json.dumps(metrics, indent=1) + "\n")
        _write_history(history_path, history)
    acc.wait_for_everyone()
    return history
