"""Pure streaming logic (parsing, windows, detectors): no Bytewax imports, testable alone."""
