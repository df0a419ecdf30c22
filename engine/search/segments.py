"""A timm ViT/DeiT/Swin cut into stem → blocks → head, so a forward can start at any block.

The fast evaluator caches the input of the block under search and runs only that block and the
ones after it; this module is what knows, per architecture, what lies between the blocks.
Composing every segment reproduces ``model(x)`` exactly (a test checks it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer
from torch import nn

Fn = Callable[[torch.Tensor], torch.Tensor]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


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


def _vit(model: VisionTransformer) -> Segments:
    def stem(x: torch.Tensor) -> torch.Tensor:
        return model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))

    def head(x: torch.Tensor, pre_logits: bool) -> torch.Tensor:
        return model.forward_head(model.norm(x), pre_logits=pre_logits)

    blocks = tuple(model.blocks)
    return Segments(stem, (_identity,) * len(blocks), blocks, head)


def _swin(model: SwinTransformer) -> Segments:
    joins, blocks = [], []
    for stage in model.layers:
        for j, block in enumerate(stage.blocks):
            joins.append(stage.downsample if j == 0 else _identity)
            blocks.append(block)

    def head(x: torch.Tensor, pre_logits: bool) -> torch.Tensor:
        return model.forward_head(model.norm(x), pre_logits=pre_logits)

    return Segments(model.patch_embed, tuple(joins), tuple(blocks), head)


def model_segments(model: nn.Module) -> Segments:
    if isinstance(model, VisionTransformer):
        return _vit(model)
    if isinstance(model, SwinTransformer):
        return _swin(model)
    raise TypeError(f"the search supports timm VisionTransformer and SwinTransformer, not {type(model).__name__}")
