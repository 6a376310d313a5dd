"""Model architectures as programs of GPU kernels."""
