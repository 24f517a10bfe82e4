"""Evaluation core: full-ranking ranks with conservative ties, metrics, significance tests."""
