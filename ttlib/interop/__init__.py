"""Interop with the original code: its model and planner as reference, its checkpoints and
D4RL HDF5 files."""
