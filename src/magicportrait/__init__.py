"""magicportrait: video face reenactment with 3D geometric guidance.

Stages (one sub-package each): ``io`` -> ``tracking`` -> ``heads`` -> ``alignment`` -> ``rendering`` ->
``pipelines`` -> ``cli``. Stages exchange the small dataclasses in :mod:`magicportrait.types`.

Coordinate convention used everywhere ("image space"): x to the right and y down, in pixels of the frame;
z points *into* the scene (away from the camera), in the same pixel units as x. This is a right-handed frame
and the one MediaPipe uses for its landmarks. Camera space of the guidance maps (official MagicPortrait
convention) is x right, y up, z toward the camera: ``camera = (x, -y, -z)``.
"""

__version__ = "0.1.0"
