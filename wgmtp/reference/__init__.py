"""numpy twins of every kernel and the whole model on the CPU (the judge of the GPU)."""
from .model import RefModel, RefState, RefWeights  # noqa: F401
