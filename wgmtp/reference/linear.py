"""numpy twins of the weight-reading kernels (wgmtp/kernels/linear.py): matvec, matmul, embed.

They work on the GGUF bytes as quants.quantize / the reader give them, dequantize with
quants.dequantize, and compute with reference.ops, so a GPU result can be checked against
exactly what the CPU model would do with the same tensor.
"""
from __future__ import annotations

import numpy as np

from .. import quants
from . import ops


def dequantize_matrix(raw: np.ndarray, qtype, rows: int, cols: int) -> np.ndarray:
    """The float32 [rows, cols] matrix a weight tensor holds."""
    return quants.dequantize(raw, qtype, (rows, cols))


def matvec(raw: np.ndarray, qtype, rows: int, cols: int, X: np.ndarray) -> np.ndarray:
    """Y [T, rows] = each token row of X [T, cols] times W^T (ops.matvec_rows)."""
    return ops.matvec_rows(dequantize_matrix(raw, qtype, rows, cols), X)


def matmul(raw: np.ndarray, qtype, rows: int, cols: int, X: np.ndarray) -> np.ndarray:
    """Same math as matvec (the GPU kernel only tiles it differently)."""
    return matvec(raw, qtype, rows, cols, X)


def embed(raw: np.ndarray, qtype, ids: np.ndarray) -> np.ndarray:
    """[T, cols] dequantized rows ids of the table (quants.dequantize_rows, ops.embed)."""
    return ops.embed(quants.dequantize_rows(raw, qtype, np.asarray(ids, np.int64)))
