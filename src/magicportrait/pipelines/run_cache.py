"""What a long-lived worker keeps between runs (``magicportrait batch``, the web UI): the face tracker, the paper's
FLAME encoders and the prepared portraits.

A portrait used by several jobs is tracked, cropped, fitted and given its render appearance once: the cache key is
its pixels (:func:`~magicportrait.pipelines.stages.image_digest`) and every option that changes that preparation
(face choice, size, framing, tracker, head model and fit, appearance). Portraits placed by the paper's tracker or
by FLAME code files are not cached (their codes belong to the run that encoded them). The cache is bounded (least
recently used entries are dropped) and lives in one process; nothing is written to disk.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from magicportrait.tracking import FaceTracker, TrackerConfig
from magicportrait.types import SourceFace

if TYPE_CHECKING:
    from magicportrait.pipelines.guide import GuideConfig
    from magicportrait.tracking.flame_encoders import FlameEncoderConfig, FlameEncoders

MAX_SOURCES = 32  # prepared portraits kept (each a 512 crop, its track and head fit: about 1 MB)


class RunCache:
    """A face tracker per tracker configuration, FLAME encoders per encoder configuration, prepared portraits."""

    def __init__(self, max_sources: int = MAX_SOURCES) -> None:
        self.max_sources = max_sources
        self._sources: OrderedDict[str, SourceFace] = OrderedDict()
        self._trackers: dict[str, FaceTracker] = {}
        self._encoders: dict[str, FlameEncoders | None] = {}
        self.hits = self.misses = 0  # portrait look-ups, for logs and tests

    def tracker(self, config: TrackerConfig) -> FaceTracker:
        """The kept face tracker for ``config`` (made on first use; closed by :meth:`close`)."""
        key = repr(config)
        if key not in self._trackers:
            self._trackers[key] = FaceTracker(config)
        return self._trackers[key]

    def encoders(self, config: FlameEncoderConfig, head_model_name: str, device: str,
                 load: Callable[[], FlameEncoders | None]) -> FlameEncoders | None:
        """The kept DECA / SMIRK encoders for ``config`` (``load`` makes them on first use)."""
        key = repr((config, head_model_name, device))
        if key not in self._encoders:
            self._encoders[key] = load()
        return self._encoders[key]

    def source(self, digest: str, config: GuideConfig, prepare: Callable[[], SourceFace]) -> SourceFace:
        """The portrait with pixels ``digest`` prepared with ``config`` (``prepare`` makes it on a miss)."""
        key = source_key(digest, config)
        if key in self._sources:
            self.hits += 1
            self._sources.move_to_end(key)
            return self._sources[key]
        self.misses += 1
        source = prepare()
        self._sources[key] = source
        while len(self._sources) > self.max_sources:
            self._sources.popitem(last=False)
        return source

    def close(self) -> None:
        for tracker in self._trackers.values():
            tracker.close()
        self._trackers.clear()
        self._sources.clear()
        self._encoders.clear()

    def __enter__(self) -> RunCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def source_key(digest: str, config: GuideConfig) -> str:
    """The portrait's pixels and the options its preparation depends on (not the driving side's)."""
    options = (config.face, config.face_box, config.size, config.framing, config.device, config.tracker,
               config.head, config.appearance)
    return hashlib.sha256(f"{digest}|{options!r}".encode()).hexdigest()
