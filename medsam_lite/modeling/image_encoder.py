"""TinyViT-5M image encoder of LiteMedSAM: (B, 3, 256, 256) in [0, 1] -> (B, 256, 64, 64).

Stages (channels x resolution): a 1x1 patch embedding keeps 256x256 and gives 64 channels; stage 0 is
MBConv blocks at 256x256; stages 1-3 are windowed-attention blocks at 128x128, 64x64 and 64x64; a
convolutional neck maps 320 channels to the 256-channel embedding. Module and parameter names follow the
official checkpoint so that it loads with ``strict=True``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medsam_lite.modeling.common import ExportForm, LayerNorm2d, grid_to_tokens, tokens_to_grid
from medsam_lite.modeling.row_strips import first_stage_in_strips


class ConvBN(nn.Sequential):
    """Bias-free convolution followed by batch norm (checkpoint keys ``c.*`` and ``bn.*``)."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, padding: int = 0, groups: int = 1
    ) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(in_ch, out_ch, kernel, stride, padding, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(out_ch))


class PatchEmbed(nn.Module):
    """Two 1x1 ConvBN with GELU between: (B, 3, H, W) -> (B, dim, H, W)."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            ConvBN(in_chans, embed_dim // 2), nn.GELU(), ConvBN(embed_dim // 2, embed_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, 3x3 depthwise, 1x1 project, residual, GELU."""

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, kernel=3, padding=1, groups=hidden)
        self.conv3 = ConvBN(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv1(x))
        y = self.act(self.conv2(y))
        y = self.conv3(y)
        return self.act(y + x)


class PatchMerging(ExportForm, nn.Module):
    """Downsampling between stages: (B, C, H, W) or (B, H*W, C) -> (B, H'*W', out_dim).

    The stride is 2, except into the 320-channel last stage, which keeps 64x64.
    """

    def __init__(self, resolution: tuple[int, int], dim: int, out_dim: int) -> None:
        super().__init__()
        self.resolution = resolution
        stride = 1 if out_dim in (320, 448, 576) else 2
        self.act = nn.GELU()
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, kernel=3, stride=stride, padding=1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = tokens_to_grid(x, *self.resolution)
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        x = self.conv3(x)
        return grid_to_tokens(x, self.export_form)


def relative_offset_index(window: int) -> torch.Tensor:
    """(w*w, w*w) index into the per-head bias table: |dy| * w + |dx| for every pair of window tokens."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    return (ys[:, None] - ys[None, :]).abs() * window + (xs[:, None] - xs[None, :]).abs()


class WindowAttention(ExportForm, nn.Module):
    """Multi-head self-attention inside one window with a learned relative-position bias.

    Input and output (B_windows, window*window, dim). ``qkv`` holds q, k, v interleaved per head. Exported form:
    q, k and v each from a linear of its own rows of ``qkv`` (``_qkv``), the same sums (each output is the same
    dot product over ``dim`` inputs), with no split of the interleaved columns, which OpenVINO runs in a reference
    kernel.
    """

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        self.register_buffer("attention_bias_idxs", relative_offset_index(window), persistent=False)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normed tokens (B, N, dim) -> q, k, v, each (B, heads, N, head_dim).

        The exported form's three linears, measured on the 2-core Xeon with AMX (OpenVINO 2026.4.1, export format
        11 -> 12): the split took 11 ms of the f32 pass (PERF_COUNT); the pass 325.7 -> 314.9 ms (medians of 20
        interleaved passes over 19 images) with the same embedding bit for bit, the microscopy volume's encoder
        stage 40.3 -> 39.0 s and every mask of the 33 shared cases the same."""
        b, n, _ = x.shape
        if not self.export_form:
            qkv = self.qkv(x).view(b, n, self.num_heads, 3 * self.head_dim)
            return tuple(t.permute(0, 2, 1, 3) for t in qkv.split(self.head_dim, dim=3))
        weight = self.qkv.weight.view(self.num_heads, 3, self.head_dim, -1)
        bias = self.qkv.bias.view(self.num_heads, 3, self.head_dim)
        return tuple(F.linear(x, weight[:, i].reshape(-1, weight.shape[-1]), bias[:, i].reshape(-1))
                     .view(b, n, self.num_heads, self.head_dim).permute(0, 2, 1, 3) for i in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self._qkv(self.norm(x))
        bias = self.attention_biases[:, self.attention_bias_idxs]
        attn = ((q @ k.transpose(-2, -1)) * self.scale + bias).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)
        return self.proj(out)


class TokenMLP(nn.Module):
    """Pre-norm MLP on tokens: (B, N, dim) -> (B, N, dim)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViTBlock(ExportForm, nn.Module):
    """Windowed attention, a 3x3 depthwise ConvBN, then an MLP: (B, H*W, dim) -> (B, H*W, dim).

    The token grid is zero-padded at the bottom/right to a multiple of the window; padded tokens take
    part in attention (as in the official model) and are dropped afterwards.
    """

    def __init__(self, dim: int, resolution: tuple[int, int], num_heads: int, window: int, mlp_ratio: float) -> None:
        super().__init__()
        self.resolution = resolution
        self.window = window
        self.attn = WindowAttention(dim, num_heads, window)
        self.mlp = TokenMLP(dim, int(dim * mlp_ratio))
        self.local_conv = ConvBN(dim, dim, kernel=3, padding=1, groups=dim)

    def _windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.resolution
        b, n, c = x.shape
        ws = self.window
        if h == ws and w == ws:
            return self.attn(x)
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        grid = F.pad(x.view(b, h, w, c), (0, 0, 0, pad_r, 0, pad_b))
        ph, pw = h + pad_b, w + pad_r
        nh, nw = ph // ws, pw // ws
        windows = grid.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
        out = self.attn(windows).view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
        return out[:, :h, :w].contiguous().view(b, n, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.resolution
        x = x + self._windowed_attention(x)
        x = grid_to_tokens(self.local_conv(tokens_to_grid(x, h, w)), self.export_form)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    """Stage 0: MBConv blocks, then patch merging to the next stage."""

    def __init__(self, dim: int, out_dim: int, resolution: tuple[int, int], depth: int, expand_ratio: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = PatchMerging(resolution, dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x)


class AttentionStage(nn.Module):
    """Stages 1-3: TinyViT blocks, then patch merging unless it is the last stage."""

    def __init__(
        self,
        dim: int,
        out_dim: int | None,
        resolution: tuple[int, int],
        depth: int,
        num_heads: int,
        window: int,
        mlp_ratio: float,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, resolution, num_heads, window, mlp_ratio) for _ in range(depth)
        )
        self.downsample = PatchMerging(resolution, dim, out_dim) if out_dim is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class TinyViT(ExportForm, nn.Module):
    """LiteMedSAM's image encoder: (B, 3, 256, 256) float in [0, 1] -> (B, 256, 64, 64).

    Exported form: the first stage in strips of rows (``modeling.row_strips``) and each convolution's grid turned
    back into tokens by one 4-D permutation (``modeling.common.grid_to_tokens``), the same sums."""

    def __init__(
        self,
        img_size: int = 256,
        in_chans: int = 3,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        # Token grid per stage: 256 -> 128 -> 64 -> 64 (the last merge keeps the resolution).
        grids = [img_size // 2 ** min(i, 2) for i in range(len(depths))]
        self.embedding_grid = grids[-1]
        stages: list[nn.Module] = [
            ConvStage(embed_dims[0], embed_dims[1], (grids[0], grids[0]), depths[0], mbconv_expand_ratio)
        ]
        for i in range(1, len(depths)):
            out_dim = embed_dims[i + 1] if i + 1 < len(depths) else None
            stages.append(
                AttentionStage(
                    embed_dims[i], out_dim, (grids[i], grids[i]), depths[i], num_heads[i], window_sizes[i], mlp_ratio
                )
            )
        self.layers = nn.ModuleList(stages)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.export_form:
            x = first_stage_in_strips(self.patch_embed, self.layers[0], x)
        else:
            x = self.layers[0](self.patch_embed(x))
        for stage in self.layers[1:]:
            x = stage(x)
        return self.neck(tokens_to_grid(x, self.embedding_grid, self.embedding_grid))
