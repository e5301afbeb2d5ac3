"""Training, exporting and checking avseg's bundled default model (needs the `train` extra: torch)."""
