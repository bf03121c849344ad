"""Data generation: SAC behaviour policies, the maze controller, the AntMaze ant controller,
and the Minari datasets."""
