"""The vision side of the stand-ins (`mblip.demo.standins`): the ViT ("EVA-CLIP"), pretrained on its own with
attribute heads (`AttributeProbe`), and the English BLIP-2 aligned from it to the frozen English LM."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from mblip.demo.standins.common import (LR, Seq2SeqBatcher, _chunks, _fit, _generate, _loss_summary, _scene_ids,
                                        _text_lm_metrics, example_loss)
from mblip.demo.standins.text import IMAGE_TOKEN, TaskSampler, WorldText
from mblip.demo.world import COLOURS, POSITIONS, SHAPES, SIZES, Scene, object_centre, render

N_ATTR = {"shape": len(SHAPES) + 1, "colour": len(COLOURS), "size": len(SIZES)}  # shape class 0 = empty column


# ----------------------------------------------------------------------------------------------------------------
# vision encoder ("EVA-CLIP")


def image_processor(image_size: int = 64):
    """BLIP-2's image preprocessing (bicubic resize, CLIP mean/std) at the demo's resolution."""
    from transformers import BlipImageProcessorPil

    return BlipImageProcessorPil(size={"height": image_size, "width": image_size})


def pixels(scenes: Sequence[Scene], image_size: int, seed: int, batch: int = 500) -> torch.Tensor:
    """Rendered and preprocessed images, (N, 3, S, S); the renderer seed is the world seed, as in `mblip fetch`."""
    proc = image_processor(image_size)
    out = []
    for i in tqdm(range(0, len(scenes), batch), desc="render scenes", unit="batch", leave=False):
        imgs = [render(s, image_size, seed) for s in scenes[i:i + batch]]
        out.append(proc(imgs, return_tensors="pt")["pixel_values"])
    return torch.cat(out)


def attribute_labels(scenes: Sequence[Scene], grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels (shape-or-empty with 0 = empty, colour, size; -100 = not applicable) per column and per patch.

    Returns (N, 3 columns, 3) and (N, grid, grid, 3). A patch is labelled with the object whose bounding box holds
    the patch centre; the dense labels give every patch a target, a much stronger signal than 3 per image.
    """
    cols = torch.full((len(scenes), len(POSITIONS), 3), -100, dtype=torch.long)
    dense = torch.full((len(scenes), grid, grid, 3), -100, dtype=torch.long)
    cols[..., 0] = 0
    dense[..., 0] = 0
    centre = (torch.arange(grid) + 0.5) / grid  # patch centres as fractions of the side
    for i, s in enumerate(scenes):
        for o in s.objects:
            label = torch.tensor([1 + SHAPES.index(o.shape), list(COLOURS).index(o.colour), list(SIZES).index(o.size)])
            cols[i, o.column] = label
            cx, cy = object_centre(o, 1)
            r = SIZES[o.size] * 1.15  # the triangle's corners reach 1.15 r
            inside = ((centre[:, None] - cy).abs() <= r) & ((centre[None, :] - cx).abs() <= r)  # (row, col)
            dense[i][inside] = label
    return cols, dense


class AttributeProbe(nn.Module):
    """Attribute heads on a ViT: a patch head on every patch state, a column head on attention-pooled columns.

    Supervising *patch* states (not the CLS token) makes the patches themselves carry what and where, which is
    what the Q-Former later cross-attends to; the column pooling is attention (one learned query, softmax over the
    column's patches), as the Q-Former reads them. The two heads are separate: with one linear head, a column's
    logits would be the mean of its patch logits, and the many background patches would vote "empty".
    """

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.vit = vit
        cfg = vit.config
        grid = cfg.image_size // cfg.patch_size
        centre = (torch.arange(grid) + 0.5) * cfg.patch_size
        column = (centre * len(POSITIONS) / cfg.image_size).long().clamp(max=len(POSITIONS) - 1)
        outside = torch.stack([(column != c).repeat(grid) for c in range(len(POSITIONS))])  # (3, grid*grid)
        self.register_buffer("outside", outside, persistent=False)
        self.query = nn.Parameter(torch.zeros(cfg.hidden_size))
        self.column_head = nn.Linear(cfg.hidden_size, sum(N_ATTR.values()))
        self.patch_head = nn.Linear(cfg.hidden_size, sum(N_ATTR.values()))
        self.grid = grid

    def forward(self, pixel_values: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Logits per attribute: per column (B, 3, K) and per patch (B, grid, grid, K)."""
        states = self.vit(pixel_values=pixel_values).last_hidden_state[:, 1:]  # drop CLS
        scores = (states @ self.query)[:, None, :].masked_fill(self.outside, float("-inf"))  # (B, 3, P)
        cols = self.column_head(scores.softmax(-1) @ states)
        patches = self.patch_head(states).unflatten(1, (self.grid, self.grid))
        sizes = list(N_ATTR.values())
        return list(cols.split(sizes, dim=-1)), list(patches.split(sizes, dim=-1))

    @staticmethod
    def loss(logits: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        return sum(nn.functional.cross_entropy(lo.flatten(0, -2), y[..., k].flatten(), ignore_index=-100)
                   for k, lo in enumerate(logits))


@torch.no_grad()
def attribute_accuracy(probe: AttributeProbe, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Held-out accuracy per attribute: shape-or-empty over all columns, colour and size over occupied ones."""
    probe.eval()
    logits = [torch.cat(parts) for parts in zip(*(probe(x[i:i + 256])[0] for i in range(0, len(x), 256)))]
    probe.train()
    out = {}
    for k, (name, lo) in enumerate(zip(N_ATTR, logits)):
        keep = y[..., k] != -100
        out[name] = round((lo.argmax(-1)[keep] == y[..., k][keep]).float().mean().item(), 4)
    return out


def train_vision(out_dir: str | Path, train_x: torch.Tensor, train_y: tuple[torch.Tensor, torch.Tensor],
                 val_x: torch.Tensor, val_y: torch.Tensor, *, hidden_size: int = 64, num_layers: int = 3,
                 patch_size: int = 8,
                 steps: int = 900, batch_size: int = 64, lr: float = LR["vit"], seed: int = 0) -> dict:
    """Pretrain the demo's EVA-CLIP on its own: a tiny Blip2VisionModel with per-column attribute heads.

    out_dir: folder for the Blip2VisionModel + image processor (the heads are not saved).
    train_x, train_y: `pixels(...)` and `attribute_labels(...)` (column and patch labels) of the train scenes.
    val_x, val_y: pixels and column labels of held-out scenes.
    hidden_size, num_layers, patch_size: ViT size (4 attention heads, MLP 4x).
    steps, batch_size, lr: AdamW schedule. Batches are flipped left-right half the time, columns swapped to match.
    seed: seeds init and batch order.
    Returns held-out accuracy per attribute (shape, colour, size) and the loss at start and end.
    """
    from transformers import Blip2VisionConfig, Blip2VisionModel

    torch.manual_seed(seed)
    image_size = train_x.shape[-1]
    if image_size % patch_size:
        raise ValueError(f"image size {image_size} is not a multiple of patch_size {patch_size}; pick a divisor")
    cfg = Blip2VisionConfig(hidden_size=hidden_size, intermediate_size=4 * hidden_size, num_hidden_layers=num_layers,
                            num_attention_heads=4, image_size=image_size, patch_size=patch_size,
                            initializer_range=0.02)  # the default (1e-10) leaves a ViT that never trains
    vit = Blip2VisionModel(cfg)
    _sincos_positions(vit)
    probe = AttributeProbe(vit)
    gen = torch.Generator().manual_seed(seed)

    def step_loss(step: int) -> torch.Tensor:
        idx = torch.randint(len(train_x), (batch_size,), generator=gen)
        x, cols, patches = train_x[idx], train_y[0][idx], train_y[1][idx]
        flip = torch.rand(batch_size, generator=gen) < 0.5  # a mirrored scene is a scene with columns reversed
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        cols = torch.where(flip[:, None, None], cols.flip(1), cols)
        patches = torch.where(flip[:, None, None, None], patches.flip(2), patches)
        col_logits, patch_logits = probe(x)
        return probe.loss(col_logits, cols) + probe.loss(patch_logits, patches)

    losses = _fit(list(probe.parameters()), step_loss, steps=steps, lr=lr, warmup=30, desc="vit", weight_decay=0.05)
    metrics = {**attribute_accuracy(probe, val_x, val_y), **_loss_summary(losses)}
    vit.save_pretrained(out_dir)
    image_processor(image_size).save_pretrained(out_dir)
    return metrics


def _sincos_positions(vit: nn.Module) -> None:
    """Start the patch position embeddings from a 2-D sine/cosine code (as MAE): a ViT trained from scratch on a
    few thousand images learns *where* far faster than from random positions. They stay trainable."""
    emb = vit.embeddings.position_embedding
    d, grid = emb.shape[-1], vit.config.image_size // vit.config.patch_size
    q = d // 4
    freq = 1.0 / (100.0 ** (torch.arange(q) / q))
    ys, xs = torch.meshgrid(torch.arange(grid).float(), torch.arange(grid).float(), indexing="ij")
    xs, ys = xs.flatten()[:, None] * freq, ys.flatten()[:, None] * freq
    code = torch.cat([xs.sin(), xs.cos(), ys.sin(), ys.cos()], 1)
    with torch.no_grad():
        emb.zero_()
        emb[0, 1:, : code.shape[1]] = 0.5 * code


# ----------------------------------------------------------------------------------------------------------------
# English BLIP-2: frozen ViT + new Q-Former + projection, aligned to the frozen English LM


@torch.no_grad()
def vision_features(vit: nn.Module, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Last hidden states of the frozen ViT, (N, 1 + patches, d): computed once, the Q-Former reads them."""
    vit.eval()
    return torch.cat([vit(pixel_values=x[i:i + batch]).last_hidden_state for i in range(0, len(x), batch)])


def _query_features(blip2, feats: torch.Tensor) -> torch.Tensor:
    """Projected Q-Former outputs from cached ViT states: HF's get_image_features minus the ViT."""
    queries = blip2.query_tokens.expand(feats.shape[0], -1, -1)
    mask = torch.ones(feats.shape[:-1], dtype=torch.long)
    out = blip2.qformer(query_embeds=queries, encoder_hidden_states=feats, encoder_attention_mask=mask)
    return blip2.language_projection(out.last_hidden_state)


def _blip2_forward(blip2, queries: torch.Tensor, batch: dict):
    """HF's BLIP-2 forward with the image part given (its `mm_encoder_outputs` hook): the image tokens get
    `queries`, the projected Q-Former outputs (`_query_features` of cached ViT states)."""
    from transformers.models.blip_2.modeling_blip_2 import BaseModelOutputWithVisionQformerOutputs

    image = BaseModelOutputWithVisionQformerOutputs(pooler_output=queries)
    return blip2(pixel_values=None, mm_encoder_outputs={"image": image}, **batch)


def text_target_loss(queries: torch.Tensor, scene_ids: Sequence[list[int]], embeddings: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of query k to the LM's input embedding of the scene description's token k, relative
    to the embeddings' mean square; queries past a description's end (or descriptions past the queries) are free.

    queries: projected Q-Former outputs (B, Q, d); scene_ids: each example's description ids (`_scene_ids`);
    embeddings: the frozen LM's input embedding matrix (V, d).
    """
    target = torch.zeros_like(queries)
    mask = torch.zeros(queries.shape[:2])
    for b, ids in enumerate(scene_ids):
        ids = ids[: queries.shape[1]]
        target[b, : len(ids)] = embeddings[ids].detach()
        mask[b, : len(ids)] = 1
    per_query = (queries - target).pow(2).mean(-1) / embeddings.detach().pow(2).mean()
    return (per_query * mask).sum() / mask.sum()


def train_blip2_english(out_dir: str | Path, vit_dir: str | Path, lm_dir: str | Path, texts: WorldText,
                        val_scenes: Sequence[Scene], train_x: torch.Tensor, val_x: torch.Tensor, *,
                        qformer_hidden: int = 96, qformer_layers: int = 2, num_query_tokens: int = 8,
                        steps: int = 300, batch_size: int = 64, lr: float = LR["blip2"], n_eval: int = 40,
                        text_target: float = 0.0, seed: int = 0) -> dict:
    """The English BLIP-2: the pretrained ViT (frozen) + a new Q-Former + projection, aligned to the frozen LM.

    out_dir: folder for the complete Blip2ForConditionalGeneration + tokenizer + Blip2Processor.
    vit_dir, lm_dir: folders written by `train_vision` and `train_english_lm`.
    texts: the train scenes' text (`WorldText`, with English); `train_x` are their images (`pixels(...)`).
    val_scenes: held-out scenes whose images are `val_x`.
    qformer_hidden, qformer_layers: Q-Former size (4 heads, cross-attention in every layer).
    num_query_tokens: learned queries = visual tokens the LM sees.
    steps, batch_size, lr: training schedule (Q-Former, queries and projection train; ViT and LM are frozen).
    n_eval: held-out scenes for the metrics, generated through the saved model's own `generate(pixel_values=...)`.
    text_target: weight of the scene-description target (`text_target_loss`) added to the LM loss; 0 = LM loss
        only. The real BLIP-2 learned from 129M image-text pairs what the LM reads; 4,000 scenes teach a Q-Former
        that slowly through the frozen LM alone (held-out VQA 0.61 at 3,000 steps, README). The target tells the
        Q-Former directly: write the scene description into the LM's input space, one query per token (so it needs
        `num_query_tokens` >= the longest description's tokens for full effect; longer ones are cut).
    Returns English held-out answer exact match and caption accuracy.
    """
    from transformers import (AutoTokenizer, Blip2Config, Blip2ForConditionalGeneration, Blip2Processor,
                              Blip2QFormerConfig, Blip2VisionModel, T5ForConditionalGeneration)

    torch.manual_seed(seed)
    vit = Blip2VisionModel.from_pretrained(vit_dir)
    lm = T5ForConditionalGeneration.from_pretrained(lm_dir)
    tok = AutoTokenizer.from_pretrained(lm_dir)
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    qcfg = Blip2QFormerConfig(hidden_size=qformer_hidden, intermediate_size=4 * qformer_hidden,
                              num_hidden_layers=qformer_layers, num_attention_heads=4, cross_attention_frequency=1,
                              initializer_range=0.02, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    cfg = Blip2Config(vision_config=vit.config.to_dict(), qformer_config=qcfg.to_dict(),
                      text_config=lm.config.to_dict(), num_query_tokens=num_query_tokens, image_token_index=image_id,
                      initializer_range=0.02)
    blip2 = Blip2ForConditionalGeneration(cfg)
    blip2.vision_model.load_state_dict(vit.state_dict())
    blip2.language_model.load_state_dict(lm.state_dict())
    with torch.no_grad():
        blip2.query_tokens.normal_(std=0.02)  # HF starts them at zeros: identical queries stay identical
    for name, p in blip2.named_parameters():
        p.requires_grad_(name.startswith(("qformer.", "query_tokens", "language_projection.")))

    feats = vision_features(blip2.vision_model, train_x)  # the ViT is frozen: once, not every step
    prefix = [image_id] * num_query_tokens
    sampler = TaskSampler(texts, ["en"])
    batcher = Seq2SeqBatcher(tok, tok.pad_token_id)
    rng = random.Random(seed)
    scene_ids = _scene_ids(tok, texts.scenes) if text_target else None
    embeddings = blip2.language_model.get_input_embeddings().weight

    def step_loss(step: int) -> torch.Tensor:
        ex = [sampler(rng) for _ in range(batch_size)]
        scenes = [e[0] for e in ex]
        batch = batcher([prefix] * batch_size, [e[1] for e in ex], [e[2] for e in ex])
        queries = _query_features(blip2, feats[scenes])
        loss = example_loss(_blip2_forward(blip2, queries, batch).logits, batch["labels"])
        if text_target:
            loss = loss + text_target * text_target_loss(queries, [scene_ids[i] for i in scenes], embeddings)
        return loss

    blip2.language_model.eval()  # frozen, no dropout
    losses = _fit([p for p in blip2.parameters() if p.requires_grad], step_loss, steps=steps, lr=lr, warmup=30,
                  desc="blip2-en")
    blip2.save_pretrained(out_dir)
    processor = Blip2Processor(image_processor(vit.config.image_size), tok, num_query_tokens=num_query_tokens)
    processor.save_pretrained(out_dir)

    def predict(items: list[tuple[int, str]], max_new_tokens: int) -> list[str]:
        # the real path: pixels -> ViT -> Q-Former -> LM, as every user of the folder runs it
        batches = []
        for chunk in _chunks(items, 200):
            b = batcher([prefix] * len(chunk), [t for _, t in chunk], None)
            b["pixel_values"] = val_x[[i for i, _ in chunk]]
            batches.append(b)
        return _generate(blip2, batches, tok, max_new_tokens)

    m = _text_lm_metrics(predict, val_scenes, texts.seed, ["en"], n_eval)
    return {"vqa_em": m["qa_em"]["en"], "caption_acc": m["caption_acc"]["en"], **_loss_summary(losses)}
