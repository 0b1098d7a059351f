"""The auto-optimizer offline: measured environments, tuners, the DQN (docs/TUNING.md)."""
