"""Logging setup for the training tools (no heavy imports: safe before checking extras)."""

from __future__ import annotations

import logging


def quiet_prophet() -> None:
    for name in ("cmdstanpy", "prophet", "prophet.plot"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.ERROR)
        logger.propagate = False
        if not logger.handlers:  # cmdstanpy adds an INFO handler to a logger without one
            logger.addHandler(logging.NullHandler())
