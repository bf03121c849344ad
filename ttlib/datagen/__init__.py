"""Data generation: SAC behaviour policies, the maze controller, and the Minari datasets."""
