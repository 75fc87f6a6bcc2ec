"""Checking models: parity gates, verify, self-test bundles, the robustness suite, confidence calibration."""
