"""The tuning policy served by ONNX Runtime (no torch): a Q-network exported by
`novacron-ml tune-train`, opened with the registry's checks (`operators.serving`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from novacron_ml.core.manifest import ModelManifest, read_manifest
from novacron_ml.core.tuning import ACTIONS, STATE_NAMES
from operators.serving import Signature, open_session

POLICY_SIGNATURE = Signature(input_dims=(len(STATE_NAMES),), output="q",
                             output_dims=(len(ACTIONS),))  # fmt: skip


class OnnxPolicy:
    def __init__(self, manifest_path: Path) -> None:
        self.manifest: ModelManifest = read_manifest(manifest_path)
        self.session = open_session(
            manifest_path, self.manifest, STATE_NAMES, "novacron-ml tune-train", POLICY_SIGNATURE
        )
        self.input_name = self.session.get_inputs()[0].name

    def q_values(self, states: np.ndarray) -> np.ndarray:
        """(batch, len(STATE_NAMES)) -> (batch, len(ACTIONS))."""
        x = np.asarray(states, dtype=np.float32).reshape(-1, len(STATE_NAMES))
        (q,) = self.session.run(["q"], {self.input_name: x})
        return np.asarray(q)

    def act(self, states: np.ndarray) -> np.ndarray:
        """The greedy action per state."""
        return self.q_values(states).argmax(axis=1)
