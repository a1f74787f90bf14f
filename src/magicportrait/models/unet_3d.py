"""The denoising UNet: Stable Diffusion 1.5's UNet inflated to video, with AnimateDiff-v2 motion modules.

"Inflated" means every convolution, group norm, spatial attention and cross-attention runs on each frame alone, so the
model runs diffusers' own 2-D blocks on the frames folded into the batch, `(B*F, C, h, w)`. Frames meet only in the
motion modules, inserted after each block layer:

    down / up blocks with attention:  resnet -> spatial transformer (cross-attention to the text) -> motion module
    down / up blocks without:         resnet -> motion module
    mid block:                        resnet -> transformer -> motion module -> resnet

The guidance features (MagicPortrait's geometry guidance) are added to the `conv_in` output. The state-dict keys are
the official ones: the non-motion keys are exactly diffusers' `UNet2DConditionModel` keys (so an SD-1.5 `unet/`
checkpoint or the official `denoising_unet.pth` loads as is), the motion keys are
`{down,up}_blocks.i.motion_modules.j.temporal_transformer.*` and `mid_block.motion_modules.0.temporal_transformer.*`
(the official `motion_module.pth`, or AnimateDiff's `mm_sd_v15_v2.ckpt`).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from torch import nn
from torch.utils.checkpoint import checkpoint

from magicportrait.errors import CheckpointError
from magicportrait.models.motion_module import VanillaTemporalModule

# The official config names its blocks "...3D"; they compute what diffusers' 2-D blocks compute on each frame.
BLOCK_TYPE_ALIASES = {
    "CrossAttnDownBlock3D": "CrossAttnDownBlock2D",
    "DownBlock3D": "DownBlock2D",
    "UNetMidBlock3DCrossAttn": "UNetMidBlock2DCrossAttn",
    "UpBlock3D": "UpBlock2D",
    "CrossAttnUpBlock3D": "CrossAttnUpBlock2D",
}
SUPPORTED_BLOCK_TYPES = frozenset(BLOCK_TYPE_ALIASES.values())

# Official `unet_additional_kwargs` that select behaviour this model always has (or never has): the only accepted
# value of each. Any other value would be a different model, so it is refused rather than ignored.
FIXED_OFFICIAL_SETTINGS = {
    "use_inflated_groupnorm": True,
    "unet_use_cross_frame_attention": False,
    "unet_use_temporal_attention": False,
    "motion_module_type": "Vanilla",
}


def frames_to_batch(video: torch.Tensor) -> torch.Tensor:
    """`(B, C, F, h, w)` -> `(B*F, C, h, w)`, the frames of each video consecutive."""
    batch, channels, num_frames, height, width = video.shape
    return video.transpose(1, 2).reshape(batch * num_frames, channels, height, width)


def batch_to_frames(frames: torch.Tensor, num_frames: int) -> torch.Tensor:
    """`(B*F, C, h, w)` -> `(B, C, F, h, w)`."""
    rows, channels, height, width = frames.shape
    return frames.reshape(rows // num_frames, num_frames, channels, height, width).transpose(1, 2)


def canonical_block_type(block_type: str) -> str:
    block_type = BLOCK_TYPE_ALIASES.get(block_type, block_type)
    if block_type not in SUPPORTED_BLOCK_TYPES:
        raise ValueError(f"Unsupported UNet block type {block_type!r}; supported: {sorted(SUPPORTED_BLOCK_TYPES)}.")
    return block_type


class UNet3DConditionModel(ModelMixin, ConfigMixin):
    r"""SD-1.5-style UNet on videos `(B, 4, F, h, w)`, conditioned on text and on guidance features.

    Parameters (those before `use_motion_module` mean what they mean for diffusers' `UNet2DConditionModel`; the
    defaults are SD 1.5's):
        sample_size (`int`, *optional*): latent side the model was trained at (informational).
        in_channels (`int`, *optional*, defaults to 4), out_channels (`int`, *optional*, defaults to 4).
        center_input_sample (`bool`, *optional*, defaults to False), flip_sin_to_cos (`bool`, defaults to True),
        freq_shift (`int`, *optional*, defaults to 0): timestep sinusoid options.
        down_block_types, mid_block_type, up_block_types (`str`): SD's blocks (the official "...3D" names are
            accepted as aliases).
        block_out_channels (`Sequence[int]`, *optional*, defaults to (320, 640, 1280, 1280)).
        layers_per_block (`int`, *optional*, defaults to 2), downsample_padding (`int`, defaults to 1),
        mid_block_scale_factor (`float`, defaults to 1), dropout (`float`, defaults to 0), act_fn (`str`),
        norm_num_groups (`int`, defaults to 32), norm_eps (`float`, defaults to 1e-5),
        cross_attention_dim (`int`, *optional*, defaults to 768): width of the text embeddings.
        attention_head_dim (`int`, *optional*, defaults to 8): as in SD 1.5, read as the number of heads.
        use_linear_projection, upcast_attention (`bool`, *optional*, defaults to False),
        resnet_time_scale_shift (`str`, *optional*, defaults to "default").
        use_motion_module (`bool`, *optional*, defaults to True): add motion modules; False builds the stage-1
            image model, whose state dict has no motion keys.
        motion_module_resolutions (`Sequence[int]`, *optional*, defaults to (1, 2, 4, 8)): downsampling factors whose
            blocks get motion modules (down block i has factor 2**i, up block i factor 2**(levels-1-i)).
        motion_module_mid_block (`bool`, *optional*, defaults to True): a motion module in the mid block.
        motion_module_decoder_only (`bool`, *optional*, defaults to False): motion modules in the up blocks only.
        motion_module_kwargs (`dict`, *optional*): `VanillaTemporalModule` arguments (heads, blocks, PE length...);
            the defaults are the official ones.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 4,
        out_channels: int = 4,
        center_input_sample: bool = False,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        down_block_types: Sequence[str] = (
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ),
        mid_block_type: str = "UNetMidBlock2DCrossAttn",
        up_block_types: Sequence[str] = (
            "UpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
        ),
        block_out_channels: Sequence[int] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1.0,
        dropout: float = 0.0,
        act_fn: str = "silu",
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 768,
        attention_head_dim: int = 8,
        use_linear_projection: bool = False,
        upcast_attention: bool = False,
        resnet_time_scale_shift: str = "default",
        use_motion_module: bool = True,
        motion_module_resolutions: Sequence[int] = (1, 2, 4, 8),
        motion_module_mid_block: bool = True,
        motion_module_decoder_only: bool = False,
        motion_module_kwargs: dict[str, Any] | None = None,
    ):
        super().__init__()
        image_unet = UNet2DConditionModel(
            sample_size=sample_size,
            in_channels=in_channels,
            out_channels=out_channels,
            center_input_sample=center_input_sample,
            flip_sin_to_cos=flip_sin_to_cos,
            freq_shift=freq_shift,
            down_block_types=tuple(canonical_block_type(name) for name in down_block_types),
            mid_block_type=canonical_block_type(mid_block_type),
            up_block_types=tuple(canonical_block_type(name) for name in up_block_types),
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            downsample_padding=downsample_padding,
            mid_block_scale_factor=mid_block_scale_factor,
            dropout=dropout,
            act_fn=act_fn,
            norm_num_groups=norm_num_groups,
            norm_eps=norm_eps,
            cross_attention_dim=cross_attention_dim,
            attention_head_dim=attention_head_dim,
            use_linear_projection=use_linear_projection,
            upcast_attention=upcast_attention,
            resnet_time_scale_shift=resnet_time_scale_shift,
        )
        # Adopt its layers as our own children (conv_in, time_proj, time_embedding, down/mid/up blocks, output
        # head), so the state-dict keys carry no prefix and equal the 2-D model's.
        for name, module in image_unet.named_children():
            self.add_module(name, module)
        self.num_upsamplers = sum(block.upsamplers is not None for block in self.up_blocks)
        self.gradient_checkpointing = False
        if use_motion_module:
            self._add_motion_modules(
                block_out_channels,
                set(motion_module_resolutions),
                motion_module_mid_block,
                motion_module_decoder_only,
                motion_module_kwargs or {},
            )

    def _add_motion_modules(
        self,
        block_out_channels: Sequence[int],
        resolutions: set[int],
        mid_block: bool,
        decoder_only: bool,
        module_kwargs: dict[str, Any],
    ) -> None:
        def motion_modules(channels: int, count: int) -> nn.ModuleList:
            return nn.ModuleList(VanillaTemporalModule(channels, **module_kwargs) for _ in range(count))

        num_levels = len(block_out_channels)
        for level, block in enumerate(self.down_blocks):
            if 2**level in resolutions and not decoder_only:
                block.motion_modules = motion_modules(block_out_channels[level], len(block.resnets))
        if mid_block:
            self.mid_block.motion_modules = motion_modules(block_out_channels[-1], len(self.mid_block.attentions))
        for level, block in enumerate(self.up_blocks):
            if 2 ** (num_levels - 1 - level) in resolutions:
                channels = block_out_channels[num_levels - 1 - level]
                block.motion_modules = motion_modules(channels, len(block.resnets))

    @classmethod
    def from_unet2d_config(
        cls, config: dict[str, Any], motion_module_kwargs: dict[str, Any] | None = None, **overrides: Any
    ) -> UNet3DConditionModel:
        """Builds the video UNet (random weights) from an SD `unet/config.json` dict.

        `overrides` take the official `unet_additional_kwargs` as they are (`use_motion_module`,
        `motion_module_resolutions`, `motion_module_mid_block`, `motion_module_decoder_only`, `motion_module_kwargs`;
        `use_inflated_groupnorm`, `unet_use_cross_frame_attention`, `unet_use_temporal_attention` and
        `motion_module_type` only at their official values), `motion_modules=False` for the stage-1 image model,
        or any constructor argument. SD config keys this model does not model are accepted only at their diffusers
        default.
        """
        settings = {**config, **overrides}
        if "motion_modules" in settings:
            settings["use_motion_module"] = settings.pop("motion_modules")
        if motion_module_kwargs is not None:
            settings["motion_module_kwargs"] = motion_module_kwargs
        for key, supported in FIXED_OFFICIAL_SETTINGS.items():
            value = settings.pop(key, supported)
            if value != supported and not (value is None and supported is False):
                raise CheckpointError(f"UNet setting {key}={value!r} is not supported (only {supported!r}).")
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
        image_defaults = {
            name: parameter.default
            for name, parameter in inspect.signature(UNet2DConditionModel.__init__).parameters.items()
        }
        for key in [key for key in settings if key not in accepted]:
            value = settings.pop(key)
            if not key.startswith("_") and (key not in image_defaults or value != image_defaults[key]):
                raise CheckpointError(f"UNet setting {key}={value!r} is not supported by {cls.__name__} (it builds "
                                      "Stable Diffusion 1.5 UNets).")
        return cls(**settings)

    def _set_gradient_checkpointing(self, module: nn.Module, value: bool = False) -> None:
        if hasattr(module, "gradient_checkpointing"):
            module.gradient_checkpointing = value

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        guidance_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predicts the model output (noise or v) for a batch of videos.

        Args:
            sample (`torch.Tensor` of shape `(B, in_channels, F, h, w)`): noisy video latents.
            timestep (`torch.Tensor` of shape `()` or `(B,)`, or a number): diffusion timestep(s).
            encoder_hidden_states (`torch.Tensor` of shape `(B, 77, cross_attention_dim)`): text embeddings, shared by
                all frames of a video.
            guidance_features (`torch.Tensor` of shape `(B, block_out_channels[0], F, h, w)`, *optional*): summed
                guidance-encoder outputs, added to the `conv_in` output.

        Returns:
            `torch.Tensor` of shape `(B, out_channels, F, h, w)`.
        """
        batch, _, num_frames, height, width = sample.shape
        # Time and text conditioning are per video; every frame of it gets the same.
        embedding = self._time_embedding(timestep, batch, sample).repeat_interleave(num_frames, dim=0)
        text = encoder_hidden_states.repeat_interleave(num_frames, dim=0)

        hidden_states = frames_to_batch(sample)
        if self.config.center_input_sample:
            hidden_states = 2 * hidden_states - 1.0
        hidden_states = self.conv_in(hidden_states)
        if guidance_features is not None:
            if guidance_features.shape[:1] + guidance_features.shape[2:] != (batch, num_frames, height, width):
                raise ValueError(
                    f"Guidance features {tuple(guidance_features.shape)} do not match {tuple(sample.shape)}."
                )
            hidden_states = hidden_states + frames_to_batch(guidance_features)

        skips = [hidden_states]
        for block in self.down_blocks:
            hidden_states = self._down_block(block, hidden_states, embedding, text, num_frames, skips)
        hidden_states = self._mid_block(hidden_states, embedding, text, num_frames)
        # Odd latent sizes: each upsampler must restore the exact size of the matching down level.
        upsample_factor = 2**self.num_upsamplers
        forward_upsample_size = height % upsample_factor != 0 or width % upsample_factor != 0
        for block in self.up_blocks:
            block_skips = [skips.pop() for _ in block.resnets]
            upsample_size = skips[-1].shape[-2:] if skips and forward_upsample_size else None
            hidden_states = self._up_block(
                block, hidden_states, block_skips, embedding, text, num_frames, upsample_size
            )

        hidden_states = self.conv_out(self.conv_act(self.conv_norm_out(hidden_states)))
        return batch_to_frames(hidden_states, num_frames)

    def _time_embedding(self, timestep: torch.Tensor | float | int, batch: int, sample: torch.Tensor) -> torch.Tensor:
        timesteps = torch.as_tensor(timestep, device=sample.device)
        if timesteps.ndim == 0:
            timesteps = timesteps[None]
        timesteps = timesteps.expand(batch)
        return self.time_embedding(self.time_proj(timesteps).to(sample.dtype))

    def _down_block(
        self,
        block: nn.Module,
        hidden_states: torch.Tensor,
        embedding: torch.Tensor,
        text: torch.Tensor,
        num_frames: int,
        skips: list[torch.Tensor],
    ) -> torch.Tensor:
        for layer in block_layers(block, block.resnets):
            hidden_states = self._layer(*layer, hidden_states, embedding, text, num_frames)
            skips.append(hidden_states)
        for downsampler in block.downsamplers or ():
            hidden_states = downsampler(hidden_states)
            skips.append(hidden_states)
        return hidden_states

    def _mid_block(
        self, hidden_states: torch.Tensor, embedding: torch.Tensor, text: torch.Tensor, num_frames: int
    ) -> torch.Tensor:
        block = self.mid_block
        hidden_states = block.resnets[0](hidden_states, embedding)
        for resnet, attention, motion_module in block_layers(block, block.resnets[1:]):
            # Mid-block order: transformer -> motion module -> resnet.
            hidden_states = self._layer(None, attention, motion_module, hidden_states, embedding, text, num_frames)
            hidden_states = resnet(hidden_states, embedding)
        return hidden_states

    def _up_block(
        self,
        block: nn.Module,
        hidden_states: torch.Tensor,
        skips: list[torch.Tensor],
        embedding: torch.Tensor,
        text: torch.Tensor,
        num_frames: int,
        upsample_size: torch.Size | None,
    ) -> torch.Tensor:
        for layer, skip in zip(block_layers(block, block.resnets), skips, strict=True):
            hidden_states = torch.cat([hidden_states, skip], dim=1)
            hidden_states = self._layer(*layer, hidden_states, embedding, text, num_frames)
        for upsampler in block.upsamplers or ():
            hidden_states = upsampler(hidden_states, upsample_size)
        return hidden_states

    def _layer(
        self,
        resnet: nn.Module | None,
        attention: nn.Module | None,
        motion_module: nn.Module | None,
        hidden_states: torch.Tensor,
        embedding: torch.Tensor,
        text: torch.Tensor,
        num_frames: int,
    ) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(
                run_layer, resnet, attention, motion_module, hidden_states, embedding, text, num_frames,
                use_reentrant=False,
            )  # fmt: skip
        return run_layer(resnet, attention, motion_module, hidden_states, embedding, text, num_frames)


def block_layers(
    block: nn.Module, resnets: Sequence[nn.Module]
) -> Iterator[tuple[nn.Module, nn.Module | None, nn.Module | None]]:
    """(resnet, spatial transformer or None, motion module or None) for each layer of a block."""
    count = len(resnets)
    attentions = block.attentions if getattr(block, "has_cross_attention", False) else [None] * count
    motion_modules = getattr(block, "motion_modules", None) or [None] * count
    return zip(resnets, attentions, motion_modules, strict=True)


def run_layer(
    resnet: nn.Module | None,
    attention: nn.Module | None,
    motion_module: nn.Module | None,
    hidden_states: torch.Tensor,
    embedding: torch.Tensor,
    text: torch.Tensor,
    num_frames: int,
) -> torch.Tensor:
    """One block layer: resnet -> spatial transformer (per frame) -> motion module (across frames)."""
    if resnet is not None:
        hidden_states = resnet(hidden_states, embedding)
    if attention is not None:
        hidden_states = attention(hidden_states, encoder_hidden_states=text, return_dict=False)[0]
    if motion_module is not None:
        hidden_states = motion_module(hidden_states, num_frames)
    return hidden_states
