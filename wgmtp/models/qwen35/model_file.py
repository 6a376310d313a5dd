"""A qwen35 model file: one GGUF (and an optional MTP sidecar) opened, its config read and every
tensor the model needs checked for presence, shape and type, so that a bad file fails here with one
line, never later on the GPU."""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import numpy as np

from ... import quants
from ...errors import BadMetadataError, MissingTensorError, NonFiniteTensorError
from ...gguf_file import Meta, TensorInfo, TokenizerInfo, catalog, check_tensor, open_reader, tokenizer_info
from ...gguf_reader import GGUFReader
from .config import read_config
from .memory import state_bytes
from .tensors import mtp_tensor_shapes, trunk_tensor_shapes


class GGUFModel:
    """A validated qwen35 model: config, catalog and raw tensor views, from one or two files.

    `mtp_path` is an MTP sidecar (`mtp-*.gguf`: token_embd, output_norm, output and the NextN
    block); its NextN tensors replace any in the main file.
    """

    def __init__(self, path: str | os.PathLike[str], mtp_path: str | os.PathLike[str] | None = None) -> None:
        self.path = str(path)
        self.reader = open_reader(path)
        trunk_cat = catalog(self.reader, self.path)
        self.config = read_config(self.reader, self.path, trunk_cat)
        self.tensors: dict[str, TensorInfo] = dict(trunk_cat)
        self._readers: dict[str, GGUFReader] = {self.path: self.reader}
        self._views: dict[str, np.ndarray] = {t.name: t.data for t in self.reader.tensors}
        self.mtp_path: str | None = None
        if mtp_path is not None:
            self._attach_sidecar(str(mtp_path))
        self._validate()

    # ---- loading

    def _attach_sidecar(self, spath: str) -> None:
        r = open_reader(spath)
        cat = catalog(r, spath)
        sc = read_config(r, spath, cat)
        c = self.config
        if sc.n_mtp != 1:
            raise BadMetadataError(spath, "MTP sidecar has no MTP block ('nextn_predict_layers' is not 1)")
        for name in ("n_embd", "n_head", "n_head_kv", "head_dim", "n_ff", "n_vocab"):
            if getattr(sc, name) != getattr(c, name):
                raise BadMetadataError(spath, f"MTP sidecar does not match the model: {name} "
                                              f"{getattr(sc, name)} != {getattr(c, name)}")
        if sc.n_layer != c.n_layer:
            raise BadMetadataError(spath, f"MTP sidecar is for a {sc.n_layer}-layer trunk, the model has {c.n_layer}")
        prefix = f"blk.{c.n_layer}."
        for t in r.tensors:
            if t.name.startswith(prefix):
                self.tensors[t.name] = cat[t.name]
                self._views[t.name] = t.data
        self._readers[spath] = r
        self.mtp_path = spath
        if c.n_mtp == 0:  # the trunk was converted with --no-mtp: the sidecar supplies the block
            self.config = replace(c, n_mtp=1, block_count=c.n_layer + 1,
                                  is_gdn=tuple(c.is_gdn[: c.n_layer]) + (False,))

    def _validate(self) -> None:
        c = self.config
        present = set(self.tensors)
        expected = trunk_tensor_shapes(c, present)
        if self.has_mtp:
            req, opt = mtp_tensor_shapes(c, present)
            expected.update(req)
            expected.update({k: v for k, v in opt.items() if k in self.tensors})
        for name, shape in expected.items():
            info = self.tensors.get(name)
            if info is None:
                where = self.mtp_path if (self.mtp_path and name.startswith(f"blk.{c.n_layer}.")) else self.path
                raise MissingTensorError(where, f"required tensor '{name}' is missing")
            check_tensor(info, name, shape)
        self.used_tensors = expected
        self._validate_vocab()

    def _validate_vocab(self) -> None:
        """Every token id the tokenizer can produce has an embedding row, and every special id a
        token: a vocabulary longer than token_embd would read embedding rows that do not exist."""
        ti = self.tokenizer_info()
        V = self.config.n_vocab
        if ti.n_tokens > V:
            raise BadMetadataError(self.path, f"the tokenizer has {ti.n_tokens} tokens but token_embd has {V} rows; "
                                              f"ids from {V} up would have no embedding")
        n = ti.n_tokens or V
        for key, tid in (("eos", ti.eos_id), ("bos", ti.bos_id), ("padding", ti.pad_id)):
            if tid is not None and not 0 <= tid < n:
                raise BadMetadataError(self.path, f"tokenizer.ggml.{key}_token_id = {tid} is outside the "
                                                  f"vocabulary of {n} tokens")

    # ---- queries

    @property
    def has_mtp(self) -> bool:
        """True when the MTP block is present (in the file or through the sidecar)."""
        c = self.config
        return c.n_mtp >= 1 and f"blk.{c.n_layer}.nextn.eh_proj.weight" in self.tensors

    def is_mtp_tensor(self, name: str) -> bool:
        return name.startswith(f"blk.{self.config.n_layer}.")

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes as gguf-py would map them (numpy order; uint8 rows for block types)."""
        info = self.tensors.get(name)
        if info is None:
            raise MissingTensorError(self.path, f"required tensor '{name}' is missing")
        return self._views[name]

    def raw_bytes(self, name: str) -> memoryview:
        """The tensor's bytes exactly as stored (zero-copy view of the memory map)."""
        info = self.tensors[name]
        r = self._readers[info.path]
        return memoryview(r.data[info.offset: info.offset + info.n_bytes])

    def meta(self, key: str, default: Any = None) -> Any:
        v = Meta(self.reader, self.path).raw(key)
        return default if v is None else v

    def check_tensors(self) -> None:
        """llama.cpp's --check-tensors: refuse a weight holding NaN or infinity, naming the first
        such tensor and block (a NaN in the LM head otherwise makes every argmax pick it)."""
        for name in sorted(self.used_tensors):
            info = self.tensors[name]
            at = quants.first_nonfinite(self.raw(name), info.qtype)
            if at is not None:
                unit = "element" if info.qtype.name in ("F32", "F16", "BF16") else f"{info.qtype.name} block"
                raise NonFiniteTensorError(info.path, f"tensor '{name}' holds NaN or infinity at {unit} {at}; "
                                                      "the file is damaged (re-download or re-convert it)")

    def tokenizer_info(self) -> TokenizerInfo:
        return tokenizer_info(self.reader, self.path)

    def weight_bytes(self, *, mtp: bool) -> int:
        """Bytes of the tensors that would be uploaded (MTP block only when `mtp`)."""
        return sum(self.tensors[n].n_bytes for n in self.used_tensors if mtp or not self.is_mtp_tensor(n))

    def state_bytes(self, n_ctx: int, *, mtp: bool, n_max: int = 3, kv_bytes: int = 2, n_seq: int = 1,
                    checkpoints: bool = False) -> int:
        """KV cache + recurrent state (with n_max + 1 snapshot planes when MTP is on), one sequence."""
        return state_bytes(self.config, n_ctx, mtp=mtp, n_max=n_max, kv_bytes=kv_bytes, n_seq=n_seq,
                           checkpoints=checkpoints)
