"""Geometric Guidance Encoder (GGE): one guidance map video (depth, normal or render) -> latent-resolution features.

The layer layout and state-dict names follow the official MagicPortrait release, so its
`guidance_encoder_<type>.pth` files load strictly. Every layer acts on each frame alone.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models import ModelMixin
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from torch import nn

AttentionMode = Literal["last", "every"]
ATTENTION_MODES = ("last", "every")


def _spatial_transformer(channels: int, num_heads: int, norm_num_groups: int) -> Transformer2DModel:
    """GroupNorm -> 1x1 proj_in -> one self-attention + GEGLU block -> 1x1 proj_out, with a residual around it.

    No cross-attention: diffusers then builds neither `norm2` nor `attn2`, matching the official keys.
    """
    return Transformer2DModel(
        num_attention_heads=num_heads,
        attention_head_dim=channels // num_heads,
        in_channels=channels,
        norm_num_groups=norm_num_groups,
        cross_attention_dim=None,
    )


class GuidanceEncoder(ModelMixin, ConfigMixin):
    r"""
    Encodes a guidance video of shape `(B, C, F, H, W)` into features of shape `(B, E, F, H/8, W/8)` that are added
    to the denoising UNet's `conv_in` output.

    Layout (official): `conv_in` + SiLU; six 3x3 convs `blocks` (strides 1, 2, 1, 2, 1, 2), each + SiLU; six spatial
    transformers `attentions` (one per conv, GroupNorm groups 1 after the stride-1 convs and 32 after the stride-2
    ones); an unused `guidance_attention` (in the official checkpoints, never run); a zero-initialised 3x3
    `conv_out`.

    Parameters:
        guidance_embedding_channels (`int`, *optional*, defaults to 320):
            Output channels E; must equal the denoising UNet's first block width.
        guidance_input_channels (`int`, *optional*, defaults to 3): Channels of the guidance map.
        block_out_channels (`tuple[int, ...]`, *optional*, defaults to `(16, 32, 96, 256)`):
            Widths of the conv stages; `len - 1` stride-2 stages set the downsampling factor (8 by default).
        attention_num_heads (`int`, *optional*, defaults to 8): Heads of every spatial transformer.
        attention_mode (`str`, *optional*, defaults to `"last"`):
            `"last"` runs only `attentions[-1]` after the last conv, as the official forward does (the
            released weights were trained this way); `"every"` runs `attentions[i]` after conv `i`, as the paper
            describes.
    """

    @register_to_config
    def __init__(
        self,
        guidance_embedding_channels: int = 320,
        guidance_input_channels: int = 3,
        block_out_channels: tuple[int, ...] = (16, 32, 96, 256),
        attention_num_heads: int = 8,
        attention_mode: AttentionMode = "last",
    ):
        super().__init__()
        if attention_mode not in ATTENTION_MODES:
            raise ValueError(f"attention_mode must be one of {ATTENTION_MODES}, got {attention_mode!r}.")
        if len(block_out_channels) < 2:
            raise ValueError(f"block_out_channels needs at least 2 widths, got {tuple(block_out_channels)}.")
        if any(channels % attention_num_heads for channels in block_out_channels):
            raise ValueError(
                f"Every width in block_out_channels {tuple(block_out_channels)} must be divisible by "
                f"attention_num_heads={attention_num_heads}."
            )

        self.conv_in = nn.Conv2d(guidance_input_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.blocks = nn.ModuleList()
        self.attentions = nn.ModuleList()
        for channels_in, channels_out in zip(block_out_channels[:-1], block_out_channels[1:], strict=True):
            self.blocks.append(nn.Conv2d(channels_in, channels_in, kernel_size=3, padding=1))
            self.attentions.append(_spatial_transformer(channels_in, attention_num_heads, norm_num_groups=1))
            self.blocks.append(nn.Conv2d(channels_in, channels_out, kernel_size=3, padding=1, stride=2))
            self.attentions.append(_spatial_transformer(channels_out, attention_num_heads, norm_num_groups=32))
        # Built (and present in the official checkpoints) but never run by the official forward.
        self.guidance_attention = _spatial_transformer(block_out_channels[-1], attention_num_heads, 32)
        self.conv_out = nn.Conv2d(block_out_channels[-1], guidance_embedding_channels, kernel_size=3, padding=1)
        # Zero output: a fresh encoder leaves the UNet unchanged until it is trained.
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Encodes independent frames `(N, C, H, W)` into `(N, E, H/8, W/8)`."""
        hidden_states = F.silu(self.conv_in(frames))
        for index, (conv, attention) in enumerate(zip(self.blocks, self.attentions, strict=True)):
            hidden_states = F.silu(conv(hidden_states))
            if self._runs_attention(index):
                hidden_states = attention(hidden_states, return_dict=False)[0]
        return self.conv_out(hidden_states)

    def _runs_attention(self, index: int) -> bool:
        return self.config.attention_mode == "every" or index == len(self.attentions) - 1

    def forward(self, guidance: torch.Tensor, frame_chunk: int | None = None) -> torch.Tensor:
        """
        Args:
            guidance (`torch.Tensor` of shape `(B, C, F, H, W)`): guidance maps in [0, 1] (not [-1, 1], as the
                official pipeline feeds them); H and W divisible by 8.
            frame_chunk (`int`, *optional*): encode at most this many frames at once (bounds peak memory on long
                videos; the result does not depend on it). Defaults to all frames at once.

        Returns:
            `torch.Tensor` of shape `(B, E, F, H/8, W/8)`.
        """
        if guidance.ndim != 5:
            raise ValueError(f"guidance must have shape (B, C, F, H, W), got {tuple(guidance.shape)}.")
        if frame_chunk is not None and frame_chunk < 1:
            raise ValueError(f"frame_chunk must be a positive number of frames, got {frame_chunk}.")
        batch_size, channels, num_frames, height, width = guidance.shape
        frames = guidance.permute(0, 2, 1, 3, 4).reshape(batch_size * num_frames, channels, height, width)
        frames = frames.to(dtype=self.conv_in.weight.dtype)
        chunk = frame_chunk or frames.shape[0]
        features = torch.cat([self.encode_frames(part) for part in frames.split(chunk)])
        features = features.reshape(batch_size, num_frames, *features.shape[1:])
        return features.permute(0, 2, 1, 3, 4)
