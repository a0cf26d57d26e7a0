"""The image encoder's first stage in strips of rows: TinyViT's exported form (``modeling.common.exported_form``).

Patch embedding, the two MBConv blocks and the first patch merging work on the 256 x 256 grid with up to 256
channels (64 MiB a tensor), so run whole each of their convolutions streams a tensor through memory. Run on
horizontal strips of ``STRIP_ROWS`` rows, the tensors passed between them stay in cache; the rows that a 3x3
depthwise convolution needs from the neighbouring strips (one per block and side) are computed twice, and the
grid's zero padding becomes explicit zero rows at the top and bottom strips. Every output value is the same sum
of the same terms as in the whole form: OpenVINO's convolutions give the exported encoder's embedding bit for
bit (tested), torch's convolutions differ by rounding. Measured on a 2-core Xeon with AMX (OpenVINO 2026.4.1,
official weights, 25 passes each, interleaved): this stage 66.0 -> 55.2 ms (median), strips of 16 / 32 / 128
rows 61.2 / 57.2 / 61.2 ms. On a 2-core AMD EPYC (no AMX) strips of 16 / 32 / 64 / 128 / 256 rows leave the whole
encoder pass within that machine's spread (median 593-620 ms of 12 interleaved passes, bit-identical embeddings).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medsam_lite.modeling.common import grid_to_tokens

STRIP_ROWS = 64  # rows of the 256 x 256 grid a strip holds: 4 strips (the measured best, see above)


def _depthwise_valid_rows(conv_bn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A 3x3 depthwise ConvBN with its vertical padding left out: (B, C, rows, W) -> (B, C, rows', W')."""
    conv = conv_bn.c
    assert conv.kernel_size == (3, 3) and conv.padding == (1, 1) and conv.groups == conv.in_channels
    return conv_bn.bn(F.conv2d(x, conv.weight, None, conv.stride, (0, 1), 1, conv.groups))


def _mbconv_rows(block: nn.Module, x: torch.Tensor, top: int, bottom: int, height: int) -> tuple[torch.Tensor, int, int]:
    """One MBConv on grid rows [top, bottom) -> its output on rows [top + 1, bottom - 1), or to the grid's edge
    where the strip reaches it (there the depthwise convolution reads zero rows, as the whole form pads)."""
    y = block.act(block.conv1(x))
    pad_top, pad_bottom = int(top == 0), int(bottom == height)
    y = block.act(_depthwise_valid_rows(block.conv2, F.pad(y, (0, 0, pad_top, pad_bottom))))
    out_top, out_bottom = top + 1 - pad_top, bottom - 1 + pad_bottom
    residual = x[:, :, out_top - top : out_bottom - top]
    return block.act(block.conv3(y) + residual), out_top, out_bottom


def first_stage_in_strips(
    patch_embed: nn.Module, stage: nn.Module, image: torch.Tensor, strip_rows: int = STRIP_ROWS
) -> torch.Tensor:
    """``stage(patch_embed(image))`` computed strip by strip: (B, 3, H, W) -> (B, H/s * W/s, out_dim) tokens,
    s the patch merging's stride (2 in LiteMedSAM). Falls back to the whole form when the strips do not tile H."""
    merge = stage.downsample
    stride = merge.conv2.c.stride[0]
    height = image.shape[2]
    if height % strip_rows or strip_rows % stride or strip_rows <= 2 * len(stage.blocks) + 1:
        return stage(patch_embed(image))
    strips = []
    for first in range(0, height, strip_rows):
        last = first + strip_rows
        # The merge's 3x3 depthwise convolution, stride s, reads rows [first - 1, last + 2 - s) of its input;
        # each MBConv before it needs one more row on each side.
        need_top, need_bottom = first - 1, last + 2 - stride
        top, bottom = max(need_top - len(stage.blocks), 0), min(need_bottom + len(stage.blocks), height)
        x = patch_embed(image[:, :, top:bottom])
        for block in stage.blocks:
            x, top, bottom = _mbconv_rows(block, x, top, bottom, height)
        x = x[:, :, : min(need_bottom, height) - top]  # stride 2 needs one row less below than a block gives
        y = merge.act(merge.conv1(x))
        y = F.pad(y, (0, 0, int(need_top < 0), max(need_bottom - height, 0)))
        strips.append(merge.conv3(merge.act(_depthwise_valid_rows(merge.conv2, y))))
    return grid_to_tokens(torch.cat(strips, dim=2), channels_last=True)
