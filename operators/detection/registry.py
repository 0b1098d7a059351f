"""Every detection tier, by name: the registry the flow's settings and the conformance test use.

One line per detector (see `operators.detection.base` for the interface).
"""

from __future__ import annotations

from operators.detection.base import Detector
from operators.detection.iforest import IsolationForestTier
from operators.detection.novelty import NoveltyTier
from operators.detection.river import RiverTier
from operators.detection.robust_z import RobustZTier

DETECTORS: dict[str, type[Detector]] = {
    cls.name: cls for cls in (RobustZTier, NoveltyTier, RiverTier, IsolationForestTier)
}
