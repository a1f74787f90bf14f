"""AnimateDiff-v2 ("Vanilla") motion module: a temporal transformer that mixes each pixel's features across frames.

The layout and the state-dict names are those of AnimateDiff's `mm_sd_v15_v2.ckpt`, which the official MagicPortrait
`motion_module-*.pth` shares:

    temporal_transformer.norm                      GroupNorm(32, C, eps 1e-6), per frame
    temporal_transformer.proj_in                   Linear(C, C)
    temporal_transformer.transformer_blocks.k      [LayerNorm -> + sinusoidal PE -> self-attention over frames
                                                    -> residual] x 2, then LayerNorm -> GEGLU FF -> residual
    temporal_transformer.proj_out                  Linear(C, C), zero-initialised (a new module starts as identity)

plus a residual around the whole transformer. Modules take and return per-frame batches `(B*F, C, h, w)` (frames of
one video consecutive), the layout the UNet runs in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn

from magicportrait.models.reference_attention import attend_projected

TEMPORAL_SELF = "Temporal_Self"


def sinusoidal_position_table(max_len: int, channels: int) -> torch.Tensor:
    """The `(1, max_len, channels)` table of the official `pos_encoder.pe` buffers.

    Even channels hold `sin(p * w_i)`, odd channels `cos(p * w_i)`, with `w_i = exp(-2i * ln(10000) / channels)`
    (the Transformer paper's encoding, interleaved); it reproduces the stored buffers to float32 rounding (the
    exp / sin / cos kernels differ by a few ulps between CPUs).
    """
    position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, channels, 2, dtype=torch.float32) * (-math.log(10000.0) / channels))
    table = torch.zeros(1, max_len, channels)
    table[0, :, 0::2] = torch.sin(position * frequency)
    table[0, :, 1::2] = torch.cos(position * frequency)
    return table


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the frame index's sinusoid to a `(N, F, C)` sequence of frames (F <= max_len)."""

    def __init__(self, channels: int, max_len: int = 32):
        super().__init__()
        # Persistent: the official checkpoints store it, so strict loading expects the key.
        self.register_buffer("pe", sinusoidal_position_table(max_len, channels))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        num_frames = hidden_states.shape[1]
        if num_frames > self.pe.shape[1]:
            raise ValueError(f"{num_frames} frames exceed the positional encoding's length {self.pe.shape[1]}.")
        return hidden_states + self.pe[:, :num_frames].to(hidden_states.dtype)


class TemporalSelfAttention(Attention):
    """diffusers `Attention` (SDPA processor) run across the frames of each spatial position.

    Keys `to_q`, `to_k`, `to_v` (no bias), `to_out.0` and, with a positional encoding, `pos_encoder.pe`.
    """

    def __init__(
        self,
        dim: int,
        num_attention_heads: int,
        attention_head_dim: int,
        position_encoding: bool = True,
        position_encoding_max_len: int = 32,
    ):
        super().__init__(query_dim=dim, heads=num_attention_heads, dim_head=attention_head_dim, bias=False)
        self.pos_encoder = SinusoidalPositionalEncoding(dim, position_encoding_max_len) if position_encoding else None

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        """`sequences`: `(B*L, F, C)`, the F frames of each spatial position -> the same shape, attended across
        them."""
        if self.pos_encoder is not None:
            # The encoding is added before the q/k/v projections, so it reaches all three.
            sequences = self.pos_encoder(sequences)
        if type(self.processor) is AttnProcessor2_0:  # the default: its steps, less its checks and division by 1
            return attend_projected(self, self.to_q(sequences), self.to_k(sequences), self.to_v(sequences))
        return super().forward(sequences)


class TemporalTransformerBlock(nn.Module):
    """Temporal self-attention layers (pre-LayerNorm, residual each), then a GEGLU feed-forward."""

    def __init__(
        self,
        dim: int,
        num_attention_heads: int,
        attention_head_dim: int,
        attention_block_types: Sequence[str] = (TEMPORAL_SELF, TEMPORAL_SELF),
        position_encoding: bool = True,
        position_encoding_max_len: int = 32,
    ):
        super().__init__()
        unsupported = [kind for kind in attention_block_types if kind != TEMPORAL_SELF]
        if unsupported:
            raise ValueError(f"Only {TEMPORAL_SELF!r} attention blocks are supported, got {unsupported}.")
        self.attention_blocks = nn.ModuleList(
            TemporalSelfAttention(
                dim, num_attention_heads, attention_head_dim, position_encoding, position_encoding_max_len
            )
            for _ in attention_block_types
        )
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in attention_block_types)
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        """`sequences`: `(B*L, F, C)` -> the same shape (every layer but the attention acts on each token alone)."""
        for attention, norm in zip(self.attention_blocks, self.norms, strict=True):
            sequences = attention(norm(sequences)) + sequences
        return self.ff(self.ff_norm(sequences)) + sequences


class TemporalTransformer3DModel(nn.Module):
    """GroupNorm -> Linear in -> temporal blocks -> Linear out, with a residual around it all."""

    def __init__(
        self,
        in_channels: int,
        num_attention_heads: int = 8,
        attention_head_dim: int | None = None,
        num_layers: int = 1,
        attention_block_types: Sequence[str] = (TEMPORAL_SELF, TEMPORAL_SELF),
        position_encoding: bool = True,
        position_encoding_max_len: int = 32,
        norm_num_groups: int = 32,
    ):
        super().__init__()
        attention_head_dim = attention_head_dim or in_channels // num_attention_heads
        inner_dim = num_attention_heads * attention_head_dim
        self.norm = nn.GroupNorm(norm_num_groups, in_channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(in_channels, inner_dim)
        self.transformer_blocks = nn.ModuleList(
            TemporalTransformerBlock(
                inner_dim,
                num_attention_heads,
                attention_head_dim,
                attention_block_types,
                position_encoding,
                position_encoding_max_len,
            )
            for _ in range(num_layers)
        )
        self.proj_out = nn.Linear(inner_dim, in_channels)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        """`(B*F, C, h, w)` -> the same shape. The tokens are laid out as per-position frame sequences once, for all
        the blocks (the layout the temporal attention needs; the other layers are per token)."""
        rows, channels, height, width = hidden_states.shape
        batch = rows // num_frames
        normed = self.norm(hidden_states).reshape(batch, num_frames, channels, height * width)
        sequences = normed.permute(0, 3, 1, 2).reshape(batch * height * width, num_frames, channels)
        sequences = self.proj_in(sequences)
        for block in self.transformer_blocks:
            sequences = block(sequences)
        sequences = self.proj_out(sequences).reshape(batch, height, width, num_frames, channels)
        per_frame = sequences.permute(0, 3, 4, 1, 2)  # (B, F, C, h, w), a view: the sum below writes it in place
        return (hidden_states.reshape(per_frame.shape) + per_frame).reshape(rows, channels, height, width)


class VanillaTemporalModule(nn.Module):
    """One AnimateDiff-v2 motion module (its weights live under `temporal_transformer.*`).

    Parameters:
        in_channels (`int`): channels of the UNet features it runs on.
        num_attention_heads (`int`, *optional*, defaults to 8): heads of the temporal attention.
        num_transformer_block (`int`, *optional*, defaults to 1): temporal transformer blocks.
        attention_block_types (`Sequence[str]`, *optional*, defaults to two `"Temporal_Self"`): attention layers
            per block (only temporal self-attention exists in the official modules).
        temporal_position_encoding (`bool`, *optional*, defaults to True): add the sinusoidal frame encoding.
        temporal_position_encoding_max_len (`int`, *optional*, defaults to 32): longest window it can encode.
        temporal_attention_dim_div (`int`, *optional*, defaults to 1): head width = in_channels / heads / this.
        zero_initialize (`bool`, *optional*, defaults to True): zero `proj_out`, so a fresh module is the identity.
    """

    def __init__(
        self,
        in_channels: int,
        num_attention_heads: int = 8,
        num_transformer_block: int = 1,
        attention_block_types: Sequence[str] = (TEMPORAL_SELF, TEMPORAL_SELF),
        temporal_position_encoding: bool = True,
        temporal_position_encoding_max_len: int = 32,
        temporal_attention_dim_div: int = 1,
        zero_initialize: bool = True,
    ):
        super().__init__()
        self.temporal_transformer = TemporalTransformer3DModel(
            in_channels,
            num_attention_heads=num_attention_heads,
            attention_head_dim=in_channels // num_attention_heads // temporal_attention_dim_div,
            num_layers=num_transformer_block,
            attention_block_types=attention_block_types,
            position_encoding=temporal_position_encoding,
            position_encoding_max_len=temporal_position_encoding_max_len,
        )
        if zero_initialize:
            nn.init.zeros_(self.temporal_transformer.proj_out.weight)
            nn.init.zeros_(self.temporal_transformer.proj_out.bias)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        """`hidden_states`: `(B*F, C, h, w)`, the F frames of each video consecutive -> the same shape."""
        if hidden_states.shape[0] % num_frames:
            raise ValueError(f"{hidden_states.shape[0]} rows are not a whole number of {num_frames}-frame videos.")
        return self.temporal_transformer(hidden_states, num_frames)
