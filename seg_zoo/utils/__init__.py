"""Utilities that sit beside the model rather than inside it (FLOP counting)."""
