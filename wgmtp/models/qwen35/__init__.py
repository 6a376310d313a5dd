"""qwen35 / qwen35moe in one folder: config from GGUF keys (config.py), the tensors a file must
hold (tensors.py), the validated model file (model_file.py), GPU state and its sizing (state.py),
the step data contract (step_data.py), the GPU program (program.py) and the runner that drives it
as the engine's backend (runner.py). The numpy reference model (wgmtp/reference/model.py) is
written separately, from the math."""
from .config import ARCHS, ModelConfig  # noqa: F401
from .model_file import GGUFModel  # noqa: F401
