"""The tuning policy served by ONNX Runtime (no torch): a Q-network exported by
`novacron-ml tune-train`, opened with the registry's checks (`operators.serving`). The
manifest's `normalisation.subsystem` (compression when absent) names the input layout it is
checked against (`novacron_ml.core.tuning.layout`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from novacron_ml.core.manifest import ModelManifest, read_manifest
from novacron_ml.core.tuning import ACTIONS, STATE_NAMES, layout
from operators.serving import Signature, open_session

POLICY_SIGNATURE = Signature(input_dims=(len(STATE_NAMES),), output="q",
                             output_dims=(len(ACTIONS),))  # fmt: skip


class OnnxPolicy:
    def __init__(self, manifest_path: Path, subsystem: str | None = None) -> None:
        self.manifest: ModelManifest = read_manifest(manifest_path)
        declared = str(self.manifest.normalisation.get("subsystem", "compression"))
        self.subsystem = subsystem or declared
        if self.subsystem != declared:
            raise ValueError(
                f"{manifest_path}: a {declared} policy, not a {self.subsystem} one; "
                f"train it with `novacron-ml tune-train --env {self.subsystem}`"
            )
        names, actions = layout(self.subsystem)
        self.state_names = names
        signature = Signature(input_dims=(len(names),), output="q", output_dims=(len(actions),))
        retrain = "novacron-ml tune-train" + (
            "" if self.subsystem == "compression" else f" --env {self.subsystem}"
        )
        self.session = open_session(manifest_path, self.manifest, names, retrain, signature)
        self.input_name = self.session.get_inputs()[0].name

    def q_values(self, states: np.ndarray) -> np.ndarray:
        """(batch, len(STATE_NAMES)) -> (batch, len(ACTIONS))."""
        x = np.asarray(states, dtype=np.float32).reshape(-1, len(self.state_names))
        (q,) = self.session.run(["q"], {self.input_name: x})
        return np.asarray(q)

    def act(self, states: np.ndarray) -> np.ndarray:
        """The greedy action per state."""
        return self.q_values(states).argmax(axis=1)
