"""A timm model cut into stem → blocks → head, so a forward can start at any block.

The fast evaluator caches the input of the block under search and runs only that block and the
ones after it; this module is what knows, per architecture, what lies between the blocks (the
blocks are ``transformer_blocks``' in the same order). Composing every segment reproduces
``model(x)`` exactly (a test per family checks it).

Between two blocks there is one tensor. A block whose model passes it more than the tokens (EVA's
rotary embedding, Twins' and XCiT's grid size, a position bias shared by all blocks) is bound to those
inputs (``bind_inputs``); CaiT's class-attention blocks, which take the class token apart, are made
callable on one tensor by their adapter (``engine/quant/attention/cait.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable
from weakref import WeakKeyDictionary

import torch
from timm.models.beit import Beit
from timm.models.cait import Cait
from timm.models.eva import Eva
from timm.models.pit import PoolingVisionTransformer
from timm.models.swin_transformer import SwinTransformer
from timm.models.swin_transformer_v2 import SwinTransformerV2
from timm.models.twins import Twins
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer_relpos import VisionTransformerRelPos
from timm.models.xcit import Xcit
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..quant.attention import PackedClassAttnBlock

Fn = Callable[[torch.Tensor], torch.Tensor]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _chain(*fns: Fn) -> Fn:
    fns = tuple(f for f in fns if f is not _identity)
    if len(fns) <= 1:
        return fns[0] if fns else _identity

    def run(x: torch.Tensor) -> torch.Tensor:
        for fn in fns:
            x = fn(x)
        return x
    return run


class UnsupportedModel(TypeError, ValueError):
    """No segments for this model: a ValueError too, so the CLI reports it in one ``error:`` line."""


_BOUND: "WeakKeyDictionary[nn.Module, RemovableHandle]" = WeakKeyDictionary()


def bind_inputs(block: nn.Module, **inputs: Callable[[], Any]) -> nn.Module:
    """``block`` made callable on the tokens alone: a forward pre-hook passes it ``inputs`` (each computed at
    the call, so it follows the model's device) whenever it is called with one tensor and nothing else. The
    model's own forward passes them itself and is left as it is. Binding again replaces the hook."""
    if block in _BOUND:
        _BOUND.pop(block).remove()

    def fill(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if len(args) == 1 and not kwargs:
            return args, {name: make() for name, make in inputs.items()}
        return None

    _BOUND[block] = block.register_forward_pre_hook(fill, with_kwargs=True)
    return block


@dataclass(frozen=True)
class Segments:
    stem: Fn                                   # images -> tokens entering the first join
    joins: tuple[Fn, ...]                      # joins[i] runs right before blocks[i] (Swin's downsample)
    blocks: tuple[nn.Module, ...]
    head: Callable[[torch.Tensor, bool], torch.Tensor]   # (tokens, pre_logits) -> outputs

    def block_input(self, images: torch.Tensor, index: int) -> torch.Tensor:
        """The tensor that enters ``blocks[index]`` (after its join)."""
        x = self.stem(images)
        for i in range(index):
            x = self.blocks[i](self.joins[i](x))
        return self.joins[index](x)

    def block_inputs(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The input of every block, from one forward."""
        out, x = [], self.stem(images)
        for join, block in zip(self.joins, self.blocks):
            x = join(x)
            out.append(x)
            x = block(x)
        return out

    def run_after(self, x: torch.Tensor, index: int, pre_logits: bool) -> torch.Tensor:
        """Output of the blocks after ``index`` and the head, given the output of ``blocks[index]``."""
        for i in range(index + 1, len(self.blocks)):
            x = self.blocks[i](self.joins[i](x))
        return self.head(x, pre_logits)

    def forward(self, images: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.joins[0](self.stem(images))
        return self.run_after(self.blocks[0](x), 0, pre_logits)


def _head(model: nn.Module, before: Fn = _identity) -> Callable[[torch.Tensor, bool], torch.Tensor]:
    """``before`` (what follows the last block inside forward_features), the final norm, then forward_head."""
    def head(x: torch.Tensor, pre_logits: bool) -> torch.Tensor:
        return model.forward_head(model.norm(before(x)), pre_logits=pre_logits)
    return head


def _plain(model: nn.Module, stem: Fn, **inputs: Callable[[], Any]) -> Segments:
    """A stem, ``model.blocks`` back to back (each bound to ``inputs``), the norm and the head."""
    blocks = tuple(bind_inputs(b, **inputs) if inputs else b for b in model.blocks)
    return Segments(stem, (_identity,) * len(blocks), blocks, _head(model))


def _vit(model: VisionTransformer) -> Segments:
    """ViT/DeiT, DINOv2, SigLIP (its attention pool is in forward_head), CLIP, the hybrids."""
    return _plain(model, lambda x: model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x)))))


def _swin(model: SwinTransformer | SwinTransformerV2) -> Segments:
    joins, blocks = [], []
    for stage in model.layers:
        for j, block in enumerate(stage.blocks):
            joins.append(stage.downsample if j == 0 else _identity)
            blocks.append(block)
    return Segments(model.patch_embed, tuple(joins), tuple(blocks), _head(model))


def _with_class_token(model: nn.Module) -> Fn:
    return lambda x: torch.cat((model.cls_token.expand(x.shape[0], -1, -1), x), dim=1)


def _beit(model: Beit) -> Segments:
    def stem(x: torch.Tensor) -> torch.Tensor:
        x = _with_class_token(model)(model.patch_embed(x))
        return model.pos_drop(x if model.pos_embed is None else x + model.pos_embed)

    if model.rel_pos_bias is None:
        return _plain(model, stem)
    return _plain(model, stem, shared_rel_pos_bias=model.rel_pos_bias)


def _relpos(model: VisionTransformerRelPos) -> Segments:
    def stem(x: torch.Tensor) -> torch.Tensor:
        x = model.patch_embed(x)
        return x if model.cls_token is None else _with_class_token(model)(x)

    if model.shared_rel_pos is None:
        return _plain(model, stem)
    return _plain(model, stem, shared_rel_pos=model.shared_rel_pos.get_bias)


def _eva(model: Eva) -> Segments:
    """EVA-02 and the ``vit_*_rope_*`` ViTs: every block takes the rotary embedding of the patch grid."""
    if model.dynamic_img_size:
        raise UnsupportedModel("the search needs a fixed image size: create the Eva model without dynamic_img_size")

    def stem(x: torch.Tensor) -> torch.Tensor:
        return model.norm_pre(model._pos_embed(model.patch_embed(x))[0])

    def rope() -> torch.Tensor:   # as Eva._pos_embed computes it at a fixed image size
        if hasattr(model.rope, "feat_shape"):
            return model.rope.get_embed()
        return model.rope.get_embed(shape=model.patch_embed.grid_size)

    if model.rope is None:
        return _plain(model, stem)
    blocks = tuple(bind_inputs(b, rope=(lambda i=i: rope()[i]) if model.rope_mixed else rope)
                   for i, b in enumerate(model.blocks))
    return Segments(stem, (_identity,) * len(blocks), blocks, _head(model))


def _cait(model: Cait) -> Segments:
    """The class token joins before the first class-attention block (or before the norm if there is none)."""
    token_only = tuple(model.blocks_token_only)
    if not all(isinstance(b, PackedClassAttnBlock) for b in token_only):
        raise UnsupportedModel("CaiT's class-attention blocks are cut by their quantization adapter: wrap the "
                               "model in QuantizedModel first")

    def stem(x: torch.Tensor) -> torch.Tensor:
        return model.pos_drop(model.patch_embed(x) + model.pos_embed)

    blocks = tuple(model.blocks) + token_only
    joins = [_identity] * len(blocks)
    if token_only:
        joins[len(model.blocks)] = _with_class_token(model)
    return Segments(stem, tuple(joins), blocks, _head(model, _identity if token_only else _with_class_token(model)))


def _xcit(model: Xcit) -> Segments:
    """XCiT's blocks take the patch grid's size; the class token joins before the class-attention blocks."""
    grid = tuple(size // model.patch_embed.patch_size for size in model.patch_embed.img_size)

    def stem(x: torch.Tensor) -> torch.Tensor:
        x, (hp, wp) = model.patch_embed(x)
        if model.pos_embed is not None:
            x = x + model.pos_embed(x.shape[0], hp, wp).reshape(x.shape[0], -1, x.shape[1]).permute(0, 2, 1)
        return model.pos_drop(x)

    blocks = tuple(bind_inputs(b, H=lambda: grid[0], W=lambda: grid[1]) for b in model.blocks)
    cls_blocks = tuple(model.cls_attn_blocks)
    joins = [_identity] * (len(blocks) + len(cls_blocks))
    if cls_blocks:
        joins[len(blocks)] = _with_class_token(model)
    head = _head(model, _identity if cls_blocks else _with_class_token(model))
    return Segments(stem, tuple(joins), blocks + cls_blocks, head)


def _twins(model: Twins) -> Segments:
    """Twins: a patch embedding per stage (from the previous stage's tokens laid out as an image), and a
    position conv (PEG) after each stage's first block; every block takes its stage's grid size."""
    joins, blocks, pending, previous = [], [], [], None
    for embed, drop, stage, pos_block in zip(model.patch_embeds, model.pos_drops, model.blocks, model.pos_block):
        size = (embed.H, embed.W)
        if previous is not None:
            pending.append(lambda x, s=previous: x.reshape(x.shape[0], *s, -1).permute(0, 3, 1, 2).contiguous())
        pending += [lambda x, e=embed: e(x)[0], drop]
        for j, block in enumerate(stage):
            joins.append(_chain(*pending))
            blocks.append(bind_inputs(block, size=lambda s=size: s))
            pending = [lambda x, p=pos_block, s=size: p(x, s)] if j == 0 else []
        previous = size
    stem, joins[0] = joins[0], _identity
    return Segments(stem, tuple(joins), tuple(blocks), _head(model, _chain(*pending)))


def _conv_size(size: tuple[int, int], conv: nn.Module) -> tuple[int, int]:
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                 for n, p, d, k, s in zip(size, conv.padding, conv.dilation, conv.kernel_size, conv.stride))


def _pit(model: PoolingVisionTransformer) -> Segments:
    """PiT: each stage's tokens are [class token(s); patches]; between stages the patches are laid out as an
    image again and pooled by a strided conv (the class tokens by a Linear)."""
    n_cls, size = model.cls_token.shape[1], tuple(model.pos_embed.shape[-2:])

    def enter(stage: nn.Module, x: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:   # as pit.Transformer
        if stage.pool is not None:
            x, cls = stage.pool(x, cls)
        return stage.norm(torch.cat((cls, x.flatten(2).transpose(1, 2)), dim=1))

    def stem(images: torch.Tensor) -> torch.Tensor:
        x = model.pos_drop(model.patch_embed(images) + model.pos_embed)
        return enter(model.transformers[0], x, model.cls_token.expand(x.shape[0], -1, -1))

    def pooled(stage: nn.Module, grid: tuple[int, int]) -> Fn:
        def join(x: torch.Tensor) -> torch.Tensor:
            patches = x[:, n_cls:].transpose(1, 2).reshape(x.shape[0], -1, *grid)
            return enter(stage, patches, x[:, :n_cls])
        return join

    joins, blocks = [], []
    for i, stage in enumerate(model.transformers):   # the first stage's entry is in the stem
        joins += [pooled(stage, size) if i > 0 else _identity] + [_identity] * (len(stage.blocks) - 1)
        if stage.pool is not None:
            size = _conv_size(size, stage.pool.conv)
        blocks += list(stage.blocks)
    return Segments(stem, tuple(joins), tuple(blocks), _head(model, lambda x: x[:, :n_cls]))


_FAMILIES: tuple[tuple[type, Callable[[Any], Segments]], ...] = (
    (VisionTransformer, _vit), ((SwinTransformer, SwinTransformerV2), _swin), (Beit, _beit),
    (VisionTransformerRelPos, _relpos), (Eva, _eva), (Cait, _cait), (Xcit, _xcit), (Twins, _twins),
    (PoolingVisionTransformer, _pit),
)


def model_segments(model: nn.Module) -> Segments:
    for kind, cut in _FAMILIES:
        if isinstance(model, kind):
            return cut(model)
    names = ("VisionTransformer, SwinTransformer(V2), Beit, VisionTransformerRelPos, Eva, Cait, Xcit, Twins, "
             "PoolingVisionTransformer")
    raise UnsupportedModel(f"the search supports timm {names}, not {type(model).__name__}")
