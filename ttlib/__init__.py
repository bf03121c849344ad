"""ttlib: the Trajectory Transformer (Janner, Li, Levine, 2021) as a small, tested library."""

from ttlib.discretize import QuantileDiscretizer, UniformDiscretizer, make_discretizer
from ttlib.kvcache import KVCache
from ttlib.model import GPTConfig, TrajectoryGPT

__version__ = "0.1.0"

__all__ = [
    "GPTConfig",
    "KVCache",
    "QuantileDiscretizer",
    "TrajectoryGPT",
    "UniformDiscretizer",
    "make_discretizer",
]
