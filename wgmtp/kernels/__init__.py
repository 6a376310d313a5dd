"""One module per kernel family: each binds its shader and knows its dispatch shape.

Conventions (every kernel follows them):
* binding 0 is a uniform of 4-byte scalars (`program.pack`), written once at build time;
* activations, caches and state are `var<storage, read_write>` f32 (or f16 KV) arrays addressed
  with element offsets from the params, so many of them can live in one arena buffer;
* weights are `var<storage, read>` u32 words in the repacked layout of `quants.repack_for_gpu`,
  one dispatch per row part (`GPUTensor.parts`);
* values that change per step (token count, positions, snapshot slot) are read from a small
  `step` storage buffer (u32 words), never baked into params, so decode and verify run the
  same pipeline and stay bit-identical (DESIGN invariant 2). A step record is STEP_WORDS u32 at
  a word offset `step_off` given in the params:
      [0] n_tok     tokens in this batch (1 for decode, n+1 for verify, <= chunk for prefill)
      [1] pos0      position of the batch's first token (token t is at pos0 + t)
      [2] src_slot  recurrent snapshot plane the batch starts from (after a rollback: n - k)
      [3] max_emit  token budget of a speculative round (0 = none; read by the accept kernel)
  Kernels that need positions may add a static `pos_add` from their params (the chained MTP
  draft steps of one submission each sit one position further).
"""

STEP_WORDS = 4
STEP_N_TOK, STEP_POS0, STEP_SRC_SLOT, STEP_MAX_EMIT = 0, 1, 2, 3
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Act:
    """An f32 activation tensor: a buffer and an element offset into it."""
    buffer: Any
    offset: int = 0

    def at(self, elems: int) -> "Act":
        return Act(self.buffer, self.offset + elems)
