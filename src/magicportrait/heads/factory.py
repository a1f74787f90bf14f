"""Which head model a run uses: FLAME when a FLAME file is configured, else the open face geometry.

:class:`HeadModelConfig` is the one set of head-model options, nested by the guide, prepare and evaluation
configs (same flags everywhere: ``--flame``, ``--flame-texture``, ``--flame-*`` fit options, ``--tracker`` and the
DECA / SMIRK weights).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from magicportrait.config import HEAD_MODEL, check_at_least, option
from magicportrait.heads.base import HeadModel
from magicportrait.heads.flame_head import FlameFitConfig
from magicportrait.io.assets import FLAME, FLAME_EYELIDS, FLAME_TEXTURE, resolve_asset
from magicportrait.tracking.flame_encoders import FlameEncoderConfig

logger = logging.getLogger(__name__)


@dataclass
class HeadModelConfig:
    """The head model and how it is fitted."""

    cli_group: ClassVar[str] = HEAD_MODEL

    flame: str | None = option(None, f"FLAME model file (FLAME 2020 generic_model.pkl, FLAME 2023 .pkl, or .npz); "
                                     f"default: ${FLAME.env}; without one the open face geometry is used.")
    flame_texture: str | None = option(None, f"FLAME texture space FLAME_texture.npz for the render map; default: "
                                             f"${FLAME_TEXTURE.env}; without one the albedo is estimated.")
    flame_eyelids: str | None = option(None, f"Folder with SMIRK's eyelid blend shapes (l_eyelid.npy, r_eyelid.npy "
                                             f"from SMIRK's assets/); default: ${FLAME_EYELIDS.env}. Adds eyelid "
                                             f"closing to FLAME: SMIRK's eyelids (deca-smirk, smirk, codes) and our "
                                             f"fit's reach the rendered head. The official release does not use them.")
    flame_shape_components: int = option(100, "FLAME identity components used (the official release: 100).")
    flame_expression_components: int = option(50, "FLAME expression components used (the official release: 50).")
    fit: FlameFitConfig = field(default_factory=FlameFitConfig, metadata={"prefix": "flame_"})
    encoders: FlameEncoderConfig = field(default_factory=FlameEncoderConfig)

    def __post_init__(self) -> None:
        check_at_least(self, 1, "flame_shape_components", "flame_expression_components")

    def flame_path(self) -> Path | None:
        """The FLAME file: the config's, else ``$MAGICPORTRAIT_FLAME``, else None (open geometry)."""
        return resolve_asset(FLAME, self.flame)

    def flame_texture_path(self) -> Path | None:
        return resolve_asset(FLAME_TEXTURE, self.flame_texture)

    def flame_eyelids_path(self) -> Path | None:
        return resolve_asset(FLAME_EYELIDS, self.flame_eyelids)

    @property
    def model_name(self) -> str:
        """"flame" or "mediapipe" (the open geometry), as configured now."""
        return "flame" if self.flame_path() is not None else "mediapipe"


def head_model_from_config(config: HeadModelConfig | None = None) -> HeadModel:
    """FLAME when the config (or the environment) names a FLAME file, else the open face geometry."""
    from magicportrait.heads.mediapipe_mesh import MediaPipeHeadModel

    config = config or HeadModelConfig()
    path = config.flame_path()
    if path is None:
        logger.info("Head model: the open face geometry (give --flame PATH or $%s for FLAME).", FLAME.env)
        return MediaPipeHeadModel()
    from magicportrait.heads.flame_head import FlameHeadModel

    model = FlameHeadModel.from_file(path, num_shape=config.flame_shape_components,
                                     num_expression=config.flame_expression_components, config=config.fit,
                                     eyelids=config.flame_eyelids_path())
    logger.info("Head model: FLAME from %s (%d identity, %d expression components, %d of them eyelids).", path,
                model.num_shape, model.num_expression, model.num_eyelids)
    return model
