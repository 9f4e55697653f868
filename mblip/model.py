"""The graft: BLIP-2's ViT + Q-Former (+ projection) on a multilingual LLM, LoRA in the LLM, a freeze policy per stage.

mBLIP (Geigle et al. 2023, protocol §2-§3) keeps BLIP-2's vision side, drops its English LLM, attaches a
multilingual one (mT0-XL, BLOOMZ-7B1, any HF seq2seq or causal LM) through a linear projection and re-aligns:
Q-Former + query tokens + projection are trained fully, the LLM only through LoRA while its weights stay frozen
(8-bit / 4-bit on a GPU).

We compose around transformers' `Blip2ForConditionalGeneration` rather than fork it: `MBlip.blip2` *is* one, so
`export()` writes a folder that `Blip2ForConditionalGeneration.from_pretrained` loads. What we add:

* `build_mblip` assembles the model without ever reading the English LLM's weights (meta-device skeleton + only
  the `vision_model.*`, `qformer.*`, `query_tokens`, `language_projection.*` tensors from the checkpoint);
* a forward on *cached* ViT features (the ViT is frozen, so its outputs are computed once) and on 2 images per
  example (MaRVL: 2 x num_query visual tokens, left image first);
* LoRA scoped to the LLM by a regex on `language_model`, a freeze policy per stage, saving exactly the trainable
  weights (PEFT's own saving would lose `query_tokens` and the Q-Former, toolchain §3).

Visual tokens reach the LLM the transformers-5 way: the prompt holds `num_images * num_query_tokens` copies of an
`<image>` token whose embeddings are replaced by the projected Q-Former outputs (`config.image_token_index`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

STAGES = ("warmup", "realign", "finetune", "eval")
COMPONENTS = ("vit", "qformer", "query_tokens", "projection", "llm(lora)", "llm(base)")
# What each stage trains (protocol §3). The ViT and the LLM's own weights are never trained; `finetune` trains a
# new LoRA on an LLM whose realign-LoRA was merged (`merge_lora` + `export`, then `load_blip2_folder`).
TRAINS = {
    "warmup": ("projection",),
    "realign": ("qformer", "query_tokens", "projection", "llm(lora)"),
    "finetune": ("qformer", "query_tokens", "projection", "llm(lora)"),
    "eval": (),
}
# LoRA targets as module-name suffixes inside the LLM, per model_type and scope; "all" is the authors' `lora_all`
# (T5: attention incl. cross-attention + gated FFN; BLOOM: attention + MLP), "qv" their plain `lora`.
_T5_TARGETS = {"all": ("q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo"), "qv": ("q", "v")}
LORA_TARGETS = {
    "t5": _T5_TARGETS,
    "mt5": _T5_TARGETS,
    "umt5": _T5_TARGETS,
    "bloom": {"all": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"), "qv": ("query_key_value",)},
}
# Other architectures: "all" = every nn.Linear of the LLM except the output head; "qv" = the first of these found.
_QV_FALLBACK = ("q_proj", "v_proj", "query", "value", "query_key_value", "qkv_proj", "c_attn", "Wqkv")
# Kept unquantised: the output head, and T5's FFN output `wo` (its activations overflow in low precision).
_QUANT_SKIP = {"t5": ("wo",), "mt5": ("wo",), "umt5": ("wo",)}
_BLIP2_PARTS = ("vision_model.", "qformer.", "query_tokens", "language_projection.")
_CLIP_MEAN, _CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def component(name: str) -> str:
    """The paper-vocabulary component of a `Blip2ForConditionalGeneration` parameter name."""
    if name.startswith("vision_model."):
        return "vit"
    if name.startswith("qformer."):
        return "qformer"
    if name == "query_tokens":
        return "query_tokens"
    if name.startswith("language_projection."):
        return "projection"
    if name.startswith("language_model."):
        return "llm(lora)" if ".lora_" in name else "llm(base)"
    raise ValueError(f"parameter {name!r} belongs to no known component {COMPONENTS}")


class MBlip(nn.Module):
    """A `Blip2ForConditionalGeneration` (`.blip2`) with a multilingual LLM, its processor and how it was built."""

    def __init__(self, blip2: nn.Module, processor, *, stage: str, build: dict, train_qformer: bool = True,
                 peft_model=None):
        super().__init__()
        self.blip2 = blip2
        self.processor = processor
        self.stage = stage
        self.trains = _trained_components(stage, train_qformer)
        self.build = build  # {"builder": name, "args": {...}}: enough to rebuild the frozen parts (`load_mblip`)
        self.merged = False
        # The PEFT wrapper holds the same modules as `blip2` (LoRA is injected in place); keeping it outside the
        # module tree keeps parameter names those of `Blip2ForConditionalGeneration`.
        object.__setattr__(self, "_peft", peft_model)

    # ----- properties in the paper's terms -----
    @property
    def config(self):
        return self.blip2.config

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def decoder_only(self) -> bool:
        return bool(self.blip2.config.use_decoder_only_language_model)

    @property
    def num_query_tokens(self) -> int:
        return self.blip2.config.num_query_tokens

    @property
    def image_token_index(self) -> int:
        return self.blip2.config.image_token_index

    @property
    def quantized(self) -> bool:
        lm = self.blip2.language_model
        return bool(getattr(lm, "is_loaded_in_8bit", False) or getattr(lm, "is_loaded_in_4bit", False))

    def trainable_names(self) -> list[str]:
        """Parameter names the stage trains (what `save_trainable` writes), in model order."""
        return [n for n, _ in self.blip2.named_parameters() if component(n) in self.trains]

    # ----- vision side -----
    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """ViT last hidden state, (B, S, D) or (B, K, S, D) for K images per example; cache it, the ViT is frozen."""
        vit = self.blip2.vision_model
        x = pixel_values.to(vit.embeddings.patch_embedding.weight.device, vit.embeddings.patch_embedding.weight.dtype)
        if x.dim() == 5:
            b, k = x.shape[:2]
            return vit(pixel_values=x.flatten(0, 1), return_dict=True).last_hidden_state.unflatten(0, (b, k))
        return vit(pixel_values=x, return_dict=True).last_hidden_state

    def image_features(self, pixel_values=None, image_embeds=None) -> torch.Tensor:
        """Projected Q-Former outputs, (B, K * num_query_tokens, d_llm): the visual tokens, image 1 first."""
        if image_embeds is None:
            if pixel_values is None:
                raise ValueError("pass pixel_values (images) or image_embeds (cached ViT features), got neither")
            image_embeds = self.encode_images(pixel_values)
        if image_embeds.dim() == 3:
            image_embeds = image_embeds[:, None]
        b, k = image_embeds.shape[:2]
        qformer, queries = self.blip2.qformer, self.blip2.query_tokens
        # step 1: the query tokens cross-attend to the frozen ViT states of every image separately
        states = image_embeds.flatten(0, 1).to(queries.device)
        mask = torch.ones(states.shape[:-1], dtype=torch.long, device=states.device)
        out = qformer(query_embeds=queries.expand(states.shape[0], -1, -1), encoder_hidden_states=states,
                      encoder_attention_mask=mask, return_dict=True).last_hidden_state
        # step 2: project into the LLM's embedding space; K images become K * Q tokens, in image order
        proj = self.blip2.language_projection
        return proj(out.to(proj.weight.dtype)).reshape(b, k * out.shape[1], -1)

    def _check_image_tokens(self, input_ids: torch.Tensor, features: torch.Tensor) -> None:
        counts = (input_ids == self.image_token_index).sum(1)
        if not bool((counts == features.shape[1]).all()):
            raise ValueError(
                f"input_ids hold {counts.tolist()} <image> tokens per example but the images give "
                f"{features.shape[1]} visual tokens each ({features.shape[1] // self.num_query_tokens} image(s) x "
                f"{self.num_query_tokens} queries); build prompts with `mblip.train.Collator` (num_images=...)")

    # ----- language side -----
    def forward(self, input_ids, attention_mask=None, labels=None, pixel_values=None, image_embeds=None,
                decoder_input_ids=None, decoder_attention_mask=None, **kwargs):
        """Loss and logits; `image_embeds` (cached ViT features) skips the ViT. Returns HF's BLIP-2 output."""
        from transformers.models.blip_2.modeling_blip_2 import BaseModelOutputWithVisionQformerOutputs

        features = self.image_features(pixel_values, image_embeds)
        self._check_image_tokens(input_ids, features)
        # step 3: HF splices the features in at the <image> positions and runs the LLM (seq2seq: labels go to the
        # decoder; causal: labels are aligned with input_ids, prompt positions -100, HF shifts them)
        image = BaseModelOutputWithVisionQformerOutputs(pooler_output=features)
        return self.blip2(pixel_values=None, input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                          decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_attention_mask,
                          mm_encoder_outputs={"image": image}, **kwargs)

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, pixel_values=None, image_embeds=None, **generate_kwargs):
        """New token ids (causal: prompt sliced off; seq2seq: from the decoder start token, as HF); kwargs go to HF
        `generate` (num_beams, max_new_tokens, length_penalty...)."""
        features = self.image_features(pixel_values, image_embeds)
        self._check_image_tokens(input_ids, features)
        embeds = self.blip2.get_input_embeddings()(input_ids)
        mask = (input_ids == self.image_token_index).unsqueeze(-1).to(embeds.device)
        embeds = embeds.masked_scatter(mask, features.to(embeds.device, embeds.dtype))
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        lm = self.blip2.language_model
        if self.decoder_only:
            out = lm.generate(input_ids=input_ids, inputs_embeds=embeds, attention_mask=attention_mask,
                              **generate_kwargs)
            return out[:, input_ids.shape[1]:]
        return lm.generate(inputs_embeds=embeds, attention_mask=attention_mask, **generate_kwargs)

    # ----- saving and loading -----
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        params = dict(self.blip2.named_parameters())
        return {n: params[n] for n in self.trainable_names()}

    def save_trainable(self, path: str | Path) -> Path:
        """Write `trainable.safetensors` (exactly the stage's trainable weights) and `build.json` into folder `path`."""
        from safetensors.torch import save_file

        if self.merged:
            raise ValueError("this model's LoRA was merged into the LLM, which the build arguments cannot recreate; "
                             "save it with `export(folder)` and reload it with `load_blip2_folder(folder, ...)`")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {n: p.detach().to("cpu").contiguous() for n, p in self.trainable_state_dict().items()}
        save_file(tensors, str(path / "trainable.safetensors"))
        (path / "build.json").write_text(json.dumps(self.build, indent=1, default=str) + "\n")
        return path

    def load_trainable(self, path: str | Path) -> None:
        """Load weights written by `save_trainable`; names and shapes must match this model's trainable set."""
        from safetensors.torch import load_file

        file = Path(path) / "trainable.safetensors" if Path(path).is_dir() else Path(path)
        if not file.exists():
            raise FileNotFoundError(f"no trainable weights at {file}; expected a folder written by save_trainable")
        loaded, mine = load_file(str(file)), self.trainable_state_dict()
        missing, extra = sorted(set(mine) - set(loaded)), sorted(set(loaded) - set(mine))
        if missing or extra:
            raise ValueError(f"{file} does not match this model (stage={self.stage!r}): missing {len(missing)} "
                             f"{missing[:3]}, unexpected {len(extra)} {extra[:3]}; build the model with the "
                             f"arguments in build.json beside it (`load_mblip`)")
        with torch.no_grad():
            for name, p in mine.items():
                if p.shape != loaded[name].shape:
                    raise ValueError(f"{file}: {name} has shape {tuple(loaded[name].shape)}, "
                                     f"the model {tuple(p.shape)}")
                p.copy_(loaded[name])

    def merge_lora(self) -> None:
        """Fold the LoRA into the LLM weights (PEFT `merge_and_unload`), as the authors do before fine-tuning."""
        if self._peft is None:
            raise ValueError("there is no LoRA to merge: the model was built with lora_scope='none'")
        if self.quantized:
            log.warning("merging LoRA into a quantised LLM re-rounds the merged weights; for a faithful merge "
                        "rebuild with quantization='none', load_trainable, then merge_lora")
        self.blip2 = self._peft.merge_and_unload()
        object.__setattr__(self, "_peft", None)
        self.merged = True

    def _full_state_dict(self) -> dict[str, torch.Tensor]:
        """`Blip2ForConditionalGeneration` weights with any LoRA folded in, leaving this model untouched."""
        sd = self.blip2.state_dict()
        if self._peft is None:
            return sd
        from peft.tuners.lora import LoraLayer

        merged = {}
        for name, module in self.blip2.named_modules():
            if isinstance(module, LoraLayer):
                base = module.get_base_layer()
                delta = sum(module.get_delta_weight(a) for a in module.active_adapters)
                merged[f"{name}.weight"] = (base.weight + delta.to(base.weight.dtype)).detach()
        out = {}
        for key, tensor in sd.items():
            if ".lora_" in key:
                continue
            key = key.replace(".base_layer.", ".")
            out[key] = merged.get(key, tensor)
        return out

    def export(self, folder: str | Path) -> Path:
        """Write a plain `Blip2ForConditionalGeneration` + `Blip2Processor` folder (LoRA merged in the copy)."""
        if self.quantized:
            raise ValueError("export needs an unquantised LLM: rebuild with quantization='none' (on a CPU that is "
                             "what happens anyway), load_trainable, then export")
        folder = Path(folder)
        self.blip2.save_pretrained(folder, state_dict=self._full_state_dict())
        self.processor.save_pretrained(folder)
        return folder


# ---------------------------------------------------------------------------------------------------------------
# building


def _trained_components(stage: str, train_qformer: bool) -> tuple[str, ...]:
    frozen = () if train_qformer else ("qformer", "query_tokens")
    return tuple(c for c in TRAINS[stage] if c not in frozen)


def _check(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def _check_lora(stage, lora_scope, lora_rank, lora_alpha, lora_dropout) -> None:
    _check("stage", stage, STAGES)
    _check("lora_scope", lora_scope, ("none", "qv", "all"))
    if lora_scope == "none":
        if stage in ("realign", "finetune"):
            log.warning("stage=%r with lora_scope='none': the LLM stays fully frozen", stage)
        return
    if stage == "warmup":
        raise ValueError(f"stage='warmup' trains the projection only, so lora_scope must be 'none', got {lora_scope!r}")
    if isinstance(lora_rank, bool) or not isinstance(lora_rank, int) or lora_rank < 1:
        raise ValueError(f"lora_rank must be a positive integer, got {lora_rank!r} (use lora_scope='none' for no LoRA)")
    if not isinstance(lora_alpha, (int, float)) or lora_alpha <= 0:
        raise ValueError(f"lora_alpha must be a positive number, got {lora_alpha!r} (the paper uses 16 with rank 8)")
    if not isinstance(lora_dropout, (int, float)) or not 0 <= lora_dropout < 1:
        raise ValueError(f"lora_dropout must be in [0, 1), got {lora_dropout!r}")


def _jsonable(args: dict) -> dict:
    """Build arguments as JSON values (paths and dtypes as strings) for build.json."""
    def conv(v):
        if isinstance(v, torch.dtype):
            return str(v).removeprefix("torch.")
        return str(v) if isinstance(v, Path) else v
    return {k: conv(v) for k, v in args.items()}


def _default_device(device: str | None) -> str:
    if device is not None:
        return str(device)
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu"


def _resolve_dtype(dtype, device: str) -> torch.dtype:
    if dtype is None:
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    resolved = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"dtype must be a torch dtype or its name ('float32', 'bfloat16', 'float16'), got {dtype!r}")
    return resolved


def _quant_config(quantization: str, model_type: str, device: str, extra_skip=()):
    """A `BitsAndBytesConfig`, or None: bitsandbytes on a CPU works but is 10-15x slower (toolchain §2)."""
    _check("quantization", quantization, ("none", "8bit", "4bit"))
    if quantization == "none" or device == "meta":
        return None
    if not device.startswith("cuda"):
        log.warning("quantization=%r needs a CUDA GPU and there is none here: loading the LLM unquantised",
                    quantization)
        return None
    from transformers import BitsAndBytesConfig

    skip = ["lm_head", *_QUANT_SKIP.get(model_type, ()), *extra_skip]
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=False,
                              bnb_4bit_compute_dtype=torch.bfloat16, llm_int8_skip_modules=skip)


def _fetch(source: str, filename: str, revision: str | None) -> Path | None:
    """A file of a local folder or a hub repo, or None if the repo has no such file."""
    if Path(source).is_dir():
        path = Path(source) / filename
        return path if path.exists() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return Path(hf_hub_download(source, filename, revision=revision))
    except EntryNotFoundError:
        return None


def _read_tensors(source: str, revision: str | None, wanted: set[str]) -> dict[str, torch.Tensor]:
    """Only the `wanted` tensors of a (possibly sharded) checkpoint; shards holding none of them are never opened."""
    for index_name, single_name in (("model.safetensors.index.json", "model.safetensors"),
                                    ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        index = _fetch(source, index_name, revision)
        if index is not None:
            weight_map = json.loads(index.read_text())["weight_map"]
            files = [_fetch(source, f, revision) for f in sorted({weight_map[k] for k in wanted if k in weight_map})]
        else:
            files = [f for f in [_fetch(source, single_name, revision)] if f is not None]
        if not files:
            continue
        tensors = {}
        for file in files:
            if file.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(file), framework="pt", device="cpu") as f:
                    tensors.update({k: f.get_tensor(k) for k in f.keys() if k in wanted})
            else:
                state = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
                tensors.update({k: v for k, v in state.items() if k in wanted})
        return tensors
    raise FileNotFoundError(f"blip2={source!r} has no model.safetensors or pytorch_model.bin (nor a sharded "
                            f"index); pass a folder or hub id in Blip2ForConditionalGeneration format")


def _image_processor(source: str, revision: str | None, image_size: int):
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(source, revision=revision)
    except OSError:
        from transformers import BlipImageProcessorPil

        log.warning("%s has no image processor config: using BLIP-2's (resize %d bicubic, CLIP mean/std)",
                    source, image_size)
        return BlipImageProcessorPil(size={"height": image_size, "width": image_size}, resample=3,
                                     image_mean=list(_CLIP_MEAN), image_std=list(_CLIP_STD))


def _add_image_token(tokenizer, llm: nn.Module) -> int:
    """Id of the `<image>` placeholder, added to the tokenizer (and the LLM's embeddings) when missing."""
    from tokenizers import AddedToken

    tokenizer.add_tokens([AddedToken("<image>", normalized=False, special=True)], special_tokens=True)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    rows = llm.get_input_embeddings().weight.shape[0]
    if image_id >= rows:  # mT0/BLOOMZ have spare embedding rows; self-trained tokenizers usually don't
        llm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        # New rows are frozen and never saved with the trainable weights, so they must not depend on the seed:
        # the mean of the old rows (the input row is overwritten by visual features anyway).
        tables = {id(e): e for e in (llm.get_input_embeddings(), llm.get_output_embeddings()) if e is not None}
        for emb in tables.values():  # once if tied
            if emb.weight.device.type != "meta":
                with torch.no_grad():
                    emb.weight[rows:] = emb.weight[:rows].mean(0)
    return image_id


def _lora_target_regex(llm: nn.Module, scope: str) -> str:
    """A PEFT `target_modules` regex (full match) that can only hit Linear layers inside `language_model`."""
    head = llm.get_output_embeddings()
    leaves = {n.rsplit(".", 1)[-1] for n, m in llm.named_modules() if isinstance(m, nn.Linear) and m is not head}
    table = LORA_TARGETS.get(llm.config.model_type)
    if table is not None:
        names = [n for n in table[scope] if n in leaves]
    elif scope == "all":
        names = sorted(leaves)
    else:
        names = [n for n in _QV_FALLBACK if n in leaves][:2]
    if not names:
        raise ValueError(f"lora_scope={scope!r} finds no target Linear layers in the {llm.config.model_type!r} LLM "
                         f"(its Linear layers: {sorted(leaves)}); use lora_scope='all'")
    return r"language_model\..*\.(" + "|".join(re.escape(n) for n in names) + ")"


def _finish(blip2, tokenizer, image_processor, *, stage, train_qformer, lora_scope, lora_rank, lora_alpha,
            lora_dropout, build) -> MBlip:
    """Shared tail of the builders: LoRA, freeze policy, processor."""
    from transformers import Blip2Processor

    peft_model = None
    if lora_scope != "none":
        bnb_log = logging.getLogger("bitsandbytes")
        if bnb_log.level == logging.NOTSET:  # peft imports bitsandbytes, whose CPU "kernels" notice is noise offline
            bnb_log.setLevel(logging.ERROR)
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        if getattr(blip2.language_model, "is_loaded_in_8bit", False) or getattr(
                blip2.language_model, "is_loaded_in_4bit", False):
            # as the authors: norms to fp32, gradient checkpointing of the LLM
            prepare_model_for_kbit_training(blip2.language_model, use_gradient_checkpointing=True)
        config = LoraConfig(r=lora_rank, lora_alpha=lora_alpha, lora_dropout=lora_dropout, bias="none",
                            target_modules=_lora_target_regex(blip2.language_model, lora_scope))
        on_meta = blip2.language_model.get_input_embeddings().weight.device.type == "meta"
        with warnings.catch_warnings():  # peft calls a transformers property deprecated in v5
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*is_gradient_checkpointing")
            peft_model = get_peft_model(blip2, config, low_cpu_mem_usage=on_meta)
    # freeze policy: a parameter trains iff its component is trained in this stage
    trains = _trained_components(stage, train_qformer)
    for name, p in blip2.named_parameters():
        p.requires_grad_(component(name) in trains)
    if blip2.config.use_decoder_only_language_model:
        tokenizer.padding_side = "left"  # generation continues the prompt, so pads go first
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    processor = Blip2Processor(image_processor, tokenizer, num_query_tokens=blip2.config.num_query_tokens)
    if isinstance(processor.image_token, str):  # a tokenizer with image_token in extra_special_tokens; HF's
        from tokenizers import AddedToken       # Blip2Processor.__call__ expects an AddedToken (transformers 5.24)

        processor.image_token = AddedToken(processor.image_token, normalized=False, special=True)
    return MBlip(blip2, processor, stage=stage, build=build, train_qformer=train_qformer, peft_model=peft_model)


def build_mblip(
    blip2: str | Path,
    llm: str | Path,
    *,
    llm_tokenizer: str | Path | None = None,
    projection: str = "reuse",
    quantization: str = "none",
    lora_rank: int = 8,
    lora_alpha: float = 16,
    lora_dropout: float = 0.05,
    lora_scope: str = "all",
    stage: str = "realign",
    train_qformer: bool = True,
    qformer_init: str = "bootstrap",
    blip2_revision: str | None = None,
    llm_revision: str | None = None,
    dtype: torch.dtype | str | None = None,
    device: str | None = None,
    seed: int = 0,
) -> MBlip:
    """Graft BLIP-2's vision side onto a multilingual LLM.

    blip2: BLIP-2 checkpoint (hub id or folder, `Blip2ForConditionalGeneration` format); its LLM is never read.
    llm: the multilingual LLM (hub id or folder); seq2seq or causal is read from its config.
    llm_tokenizer: where the LLM's tokenizer lives; None = `llm`.
    projection: "reuse" the BLIP-2 projection (needs equal LLM hidden sizes, e.g. Flan-T5-XL -> mT0-XL), "new", or
        "align": BLIP-2's projection followed by a least-squares map between the two LLMs' input embeddings over
        their shared token strings (`mblip.projection`; our addition, any widths).
    quantization: "none", "8bit" (LLM.int8) or "4bit" (NF4, bf16 compute) for the frozen LLM; CUDA only.
    lora_rank: LoRA rank r (paper: 8).
    lora_alpha: LoRA alpha (paper: 16; the update is scaled by alpha / r).
    lora_dropout: dropout on the LoRA input (paper: 0.05).
    lora_scope: "all" (attention + FFN, the authors' `lora_all`), "qv" (query/value only) or "none".
    stage: "warmup" (projection only), "realign"/"finetune" (Q-Former + queries + projection + LoRA), "eval".
    train_qformer: False freezes Q-Former + query tokens in realign/finetune (ablation: projection + LoRA only).
    qformer_init: "bootstrap" from the BLIP-2 checkpoint, or "scratch" (random Q-Former and queries; ablation).
    blip2_revision: hub revision (commit) of `blip2`.
    llm_revision: hub revision (commit) of `llm` and its tokenizer.
    dtype: dtype of the frozen ViT and LLM; None = float32 on a CPU, bfloat16 on CUDA. Trainable parts stay fp32.
    device: "cpu", "cuda:N", or "meta" (shapes only, no weights read: parameter counts); None = cuda:LOCAL_RANK if any.
    seed: seeds the fresh weights (new projection, scratch Q-Former, LoRA, new embedding rows).
    """
    build = {"builder": "build_mblip", "args": _jsonable(locals())}
    _check("projection", projection, ("reuse", "new", "align"))
    _check("qformer_init", qformer_init, ("bootstrap", "scratch"))
    _check_lora(stage, lora_scope, lora_rank, lora_alpha, lora_dropout)
    from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, Blip2Config,
                              Blip2ForConditionalGeneration, Blip2QFormerModel)

    blip2, llm = str(blip2), str(llm)
    device = _default_device(device)
    on_meta = device == "meta"
    dtype = _resolve_dtype(dtype, device)

    blip_cfg = AutoConfig.from_pretrained(blip2, revision=blip2_revision)
    if blip_cfg.model_type != "blip-2":
        raise ValueError(f"blip2={blip2!r} is a {blip_cfg.model_type!r} checkpoint, not BLIP-2 (model_type 'blip-2')")
    llm_cfg = AutoConfig.from_pretrained(llm, revision=llm_revision)
    if llm_cfg.model_type == "blip-2":
        raise ValueError(f"llm={llm!r} is a whole BLIP-2/mBLIP model, not an LLM; to continue from it use "
                         f"load_blip2_folder({llm!r}, stage='finetune', ...)")
    d_llm, d_q = llm_cfg.get_text_config().hidden_size, blip_cfg.qformer_config.hidden_size
    d_old = blip_cfg.text_config.hidden_size
    if projection == "reuse" and d_old != d_llm:
        raise ValueError(f"projection='reuse' needs the BLIP-2 projection ({d_q}->{d_old}) to fit the LLM's hidden "
                         f"size {d_llm}; use projection='new' (a freshly initialised {d_q}->{d_llm} projection)")
    tokenizer = AutoTokenizer.from_pretrained(llm_tokenizer or llm, revision=llm_revision)

    with torch.random.fork_rng(devices=[]):  # seeded fresh weights without touching the caller's RNG
        torch.manual_seed(seed)
        cfg = Blip2Config(vision_config=blip_cfg.vision_config, qformer_config=blip_cfg.qformer_config,
                          text_config=llm_cfg, num_query_tokens=blip_cfg.num_query_tokens)
        cfg.use_decoder_only_language_model = not llm_cfg.is_encoder_decoder
        # step 1: a skeleton on the meta device costs nothing, whatever the sizes
        with torch.device("meta"):
            model = Blip2ForConditionalGeneration(cfg)
        # step 2: the LLM, loaded on its own (possibly quantised)
        if not on_meta:
            auto = AutoModelForCausalLM if cfg.use_decoder_only_language_model else AutoModelForSeq2SeqLM
            quant = _quant_config(quantization, llm_cfg.model_type, device)
            lm = auto.from_pretrained(llm, revision=llm_revision, dtype=dtype, quantization_config=quant,
                                      device_map={"": device} if quant is not None else None)
            model.language_model = lm if quant is not None else lm.to(device)
            model.config.text_config = model.language_model.config
        # step 3: ViT, Q-Former, query tokens, projection from the BLIP-2 checkpoint (only these tensors are read)
        if not on_meta:
            wanted = {k for k in model.state_dict() if k.startswith(_BLIP2_PARTS)}
            if qformer_init == "scratch":
                wanted = {k for k in wanted if not k.startswith(("qformer.", "query_tokens"))}
            if projection == "new":
                wanted = {k for k in wanted if not k.startswith("language_projection.")}
            tensors = _read_tensors(blip2, blip2_revision, wanted)
            missing = sorted(wanted - set(tensors))
            if missing:
                raise ValueError(f"blip2={blip2!r} lacks {len(missing)} vision/Q-Former tensors, e.g. {missing[:3]}")
            parts = (("vision_model", dtype), ("qformer", torch.float32), ("language_projection", torch.float32))
            for part, cast in parts[:2] if projection == "align" else parts:
                sub = {k[len(part) + 1:]: v.to(device, cast) for k, v in tensors.items() if k.startswith(part + ".")}
                if sub:
                    getattr(model, part).load_state_dict(sub, strict=True, assign=True)
            if "query_tokens" in tensors:
                model.query_tokens = nn.Parameter(tensors["query_tokens"].to(device, torch.float32))
            if qformer_init == "scratch":
                model.qformer = Blip2QFormerModel._from_config(cfg.qformer_config, dtype=torch.float32).to(device)
                # random, not HF's zeros: identical queries would stay identical forever
                model.query_tokens = nn.Parameter(
                    torch.randn(1, cfg.num_query_tokens, d_q, device=device) * cfg.initializer_range)
            if projection == "new":
                proj = nn.Linear(d_q, d_llm, device=device)
                nn.init.normal_(proj.weight, std=cfg.initializer_range)
                nn.init.zeros_(proj.bias)
                model.language_projection = proj
            if projection == "align":
                from mblip import projection as P
                keys = P.embedding_keys(blip_cfg.text_config)
                tensors.update(_read_tensors(blip2, blip2_revision, set(keys)))
                old_tok = AutoTokenizer.from_pretrained(blip2, revision=blip2_revision)
                model.language_projection = P.align_projection(
                    tensors, keys, old_tok, tokenizer, model.language_model.get_input_embeddings().weight).to(device)
        # step 4: the <image> placeholder token
        model.config.image_token_index = _add_image_token(tokenizer, model.language_model)
        model.config.text_config.vocab_size = model.language_model.get_input_embeddings().weight.shape[0]
        image_processor = _image_processor(blip2, blip2_revision, blip_cfg.vision_config.image_size)
        return _finish(model, tokenizer, image_processor, stage=stage, train_qformer=train_qformer,
                       lora_scope=lora_scope, lora_rank=lora_rank, lora_alpha=lora_alpha,
                       lora_dropout=lora_dropout, build=build)


def load_blip2_folder(
    path: str | Path,
    *,
    stage: str = "eval",
    train_qformer: bool = True,
    quantization: str = "none",
    lora_rank: int = 8,
    lora_alpha: float = 16,
    lora_dropout: float = 0.05,
    lora_scope: str = "none",
    revision: str | None = None,
    dtype: torch.dtype | str | None = None,
    device: str | None = None,
    seed: int = 0,
) -> MBlip:
    """A full `Blip2ForConditionalGeneration` folder or hub id (our `export`, released `Gregor/mblip-mt0-xl`).

    path: folder or hub id with the model, its tokenizer and (optionally) an image processor config.
    stage: "eval" (all frozen) or "finetune" (a new LoRA on this, e.g. merged, model); see `build_mblip`.
    train_qformer, quantization, lora_*, dtype, device, seed: as in `build_mblip`.
    revision: hub revision (commit) of `path`.
    """
    build = {"builder": "load_blip2_folder", "args": _jsonable(locals())}
    _check_lora(stage, lora_scope, lora_rank, lora_alpha, lora_dropout)
    from transformers import AutoConfig, AutoTokenizer, Blip2ForConditionalGeneration

    path, device = str(path), _default_device(device)
    dtype = _resolve_dtype(dtype, device)
    cfg = AutoConfig.from_pretrained(path, revision=revision)
    if cfg.model_type != "blip-2":
        raise ValueError(f"path={path!r} is a {cfg.model_type!r} checkpoint, not BLIP-2 (model_type 'blip-2')")
    quant = _quant_config(quantization, cfg.text_config.model_type, device,
                          extra_skip=("vision_model", "qformer", "language_projection"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, info = Blip2ForConditionalGeneration.from_pretrained(
            path, revision=revision, dtype=dtype, quantization_config=quant,
            device_map={"": device} if quant is not None else None, output_loading_info=True)
        if info["missing_keys"]:  # transformers would initialise them randomly, silently
            missing = sorted(info["missing_keys"])
            raise ValueError(f"{path} lacks {len(missing)} weights of Blip2ForConditionalGeneration, e.g. "
                             f"{missing[:3]}; is it a full BLIP-2 folder (for our own checkpoints use load_mblip)?")
        if quant is None:
            model.to(device)
        model.qformer.float()  # trainable parts in fp32
        model.language_projection.float()
        model.query_tokens.data = model.query_tokens.data.float()
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
        # released mBLIP checkpoints predate transformers' image-token path: give them the placeholder token
        image_id = _add_image_token(tokenizer, model.language_model)
        if model.config.image_token_index not in (None, image_id):
            raise ValueError(f"{path}: config.image_token_index={model.config.image_token_index} but the tokenizer's "
                             f"<image> token has id {image_id}; fix image_token_index in config.json")
        model.config.image_token_index = image_id
        model.config.text_config.vocab_size = model.language_model.get_input_embeddings().weight.shape[0]
        image_processor = _image_processor(path, revision, cfg.vision_config.image_size)
        return _finish(model, tokenizer, image_processor, stage=stage, train_qformer=train_qformer,
                       lora_scope=lora_scope, lora_rank=lora_rank, lora_alpha=lora_alpha,
                       lora_dropout=lora_dropout, build=build)


BUILDERS: dict[str, Callable[..., MBlip]] = {"build_mblip": build_mblip, "load_blip2_folder": load_blip2_folder}


def load_mblip(path: str | Path, **overrides) -> MBlip:
    """Rebuild the model described by `path/build.json` (overrides win, e.g. device, quantization) and load weights."""
    path = Path(path)
    if not (path / "build.json").exists():
        raise FileNotFoundError(f"{path} has no build.json; expected a folder written by MBlip.save_trainable")
    build = json.loads((path / "build.json").read_text())
    args = {**build["args"], **overrides}
    model = BUILDERS[build["builder"]](**args)
    model.load_trainable(path)
    return model


# ---------------------------------------------------------------------------------------------------------------
# reporting


def trainable_parameters_table(model: MBlip) -> list[tuple[str, int, int]]:
    """(component, trainable, total) parameters: vit, qformer, query_tokens, projection, llm(lora), llm(base)."""
    counts = {c: [0, 0] for c in COMPONENTS}
    for name, p in model.blip2.named_parameters():
        row = counts[component(name)]
        row[0] += p.numel() if p.requires_grad else 0
        row[1] += p.numel()
    return [(c, t, n) for c, (t, n) in counts.items()]


def format_parameters_table(rows: list[tuple[str, int, int]]) -> str:
    """A Markdown table of `trainable_parameters_table` rows, in millions, with a total line."""
    lines = ["| component | trainable (M) | total (M) |", "|---|---:|---:|"]
    for name, trainable, total in [*rows, ("total", sum(r[1] for r in rows), sum(r[2] for r in rows))]:
        lines.append(f"| {name} | {trainable / 1e6:.2f} | {total / 1e6:.2f} |")
    return "\n".join(lines)
