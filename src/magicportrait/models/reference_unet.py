"""The reference UNet ("appearance net"): SD 1.5's UNet run once on the portrait's latent to feed reference attention.

Only the inputs of its spatial self-attention layers are used (`ReferenceFusion` records them); its output never is, so
like the official model it has no output head: its state dict is SD's UNet keys minus `conv_norm_out.*` and
`conv_out.*`, exactly the official `reference_unet.pth`. Its forward returns the last up block's features.
"""

from __future__ import annotations

import inspect
from typing import Any

from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from torch import nn


class ReferenceUNet2DConditionModel(UNet2DConditionModel):
    """diffusers' `UNet2DConditionModel` (same configuration) without `conv_norm_out` / `conv_out`."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # No output head: the parent's forward skips a `None` norm and the identity maps nothing.
        self.conv_norm_out = None
        self.conv_out = nn.Identity()

    # ConfigMixin learns the accepted configuration keys from the `__init__` signature: expose the parent's.
    __init__.__signature__ = inspect.signature(UNet2DConditionModel.__init__)

    @classmethod
    def from_unet2d_config(cls, config: dict[str, Any]) -> ReferenceUNet2DConditionModel:
        """Builds the reference UNet (random weights) from an SD `unet/config.json` dict."""
        return cls.from_config(config)
