"""One module per kernel family: each binds its shader and knows its dispatch shape.

Conventions (every kernel follows them):
* binding 0 is a uniform of 4-byte scalars (`program.pack`), written once at build time;
* activations, caches and state are `var<storage, read_write>` f32 (or f16 KV) arrays addressed
  with element offsets from the params, so many of them can live in one arena buffer;
* weights are `var<storage, read>` u32 words in the repacked layout of `quants.repack_for_gpu`,
  one dispatch per row part (`GPUTensor.parts`);
* values that change per step (token count, positions, snapshot slot) are read from a small
  `step` storage buffer (u32 words), never baked into params, so decode and verify run the
  same pipeline and stay bit-identical (ARCHITECTURE.md, "Batch invariance"). A step record is STEP_WORDS u32 at
  a word offset `step_off` given in the params:
      [0] n_tok     tokens in this batch (1 for decode, n+1 for verify, <= chunk for prefill)
      [1] pos0      position of the batch's first token (token t is at pos0 + t)
      [2] src_slot  recurrent snapshot plane the batch starts from (after a rollback: n - k), in bits
                    0..15; bits 16..19: which planes the recurrent kernels write (`store_word`:
                    STORE_PLANES every snapshot plane, STORE_NONE none, STORE_FINAL only the state
                    after the last row, into plane `dst`, bits 20..)
      [3] max_emit  token budget of a speculative round (0 = none; read by the accept kernel)
      [4] slot      the sequence slot of these rows (0 with one sequence)
      [5] row0      the batch row of the record's first token (0 for a whole batch)
      [6..7]        zero (reserved)
  A batch of several sequences is cut into segments, one record each (shaders/include/
  segments.wgsl): the kernels that index state by slot, position or plane take `segs` (the first
  of `n_seg` consecutive records) and run, per segment, exactly the code they run for one
  sequence; every other kernel reads only the batch record's n_tok (docs/ARCHITECTURE.md, "Slots").
  Kernels that need positions may add a static `pos_add` from their params (the chained MTP
  draft steps of one submission each sit one position further).
* every public wrapper is decorated with `gpu.program.records`: each call is recorded in the
  program as one op with its arguments, which is all the op-by-op checker (check/trace.py) needs.
"""

from dataclasses import dataclass
from typing import Any

STEP_WORDS = 8
STORE_PLANES, STORE_NONE, STORE_FINAL = 0, 1, 2     # record word 2's bits 16.. (segments.wgsl)


def store_word(src_plane: int, store: int = STORE_PLANES, dst: int = 0) -> int:
    """Record word 2: the plane a segment starts from and which planes its recurrence writes
    (STORE_FINAL: the final state into plane `dst`, which may be `src_plane`)."""
    return src_plane | store << 16 | dst << 20


def parse_store_word(w: int) -> tuple[int, int, int]:
    """(src plane, store mode, dst plane) of record word 2."""
    return w & 0xFFFF, (w >> 16) & 0xF, w >> 20


@dataclass(frozen=True)
class Act:
    """An f32 activation tensor: a buffer and an element offset into it."""
    buffer: Any
    offset: int = 0

    def at(self, elems: int) -> "Act":
        return Act(self.buffer, self.offset + elems)


def short_name(tensor_name: str) -> str:
    """'blk.3.post_attention_norm.weight' -> 'post_attention_norm', 'blk.3.gdn_in' -> 'gdn_in':
    the op names of check reports."""
    parts = tensor_name.split(".")
    if parts[-1] in ("weight", "bias") and len(parts) > 1:
        parts = parts[:-1]
    return parts[-1]


def weight_name(w: Any, default: str) -> str:
    """The short name of a weight argument (a GPUTensor has one; an Act or a raw buffer not)."""
    name = getattr(w, "name", None)
    return short_name(name) if isinstance(name, str) else default
