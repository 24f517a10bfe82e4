"""Sessionization, leak-free splits and session-parallel batching."""
