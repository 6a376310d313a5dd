"""One package per model architecture: what the engine needs to run it on the GPU."""
