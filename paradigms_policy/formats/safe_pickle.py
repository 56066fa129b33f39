"""Load pickled torch checkpoints without letting the file run code.

A DiffusionPolicy ``.ckpt`` is ``torch.save(..., pickle_module=dill)`` of a dict holding an
OmegaConf config. Unpickling calls whatever callables the file names, so a hostile file runs
code on a naive load. torch's ``weights_only=True`` refuses these files (the OmegaConf metadata
holds a ``collections.defaultdict``, and dill writes ``dill._dill._load_type`` for builtin types),
so this module unpickles with an explicit allow-list instead: plain containers, torch's tensor
rebuild functions, OmegaConf's config nodes, and dill's ``_load_type`` answered from a table of
builtin types (dill itself is not needed). Any other global is refused with a message naming it;
``trusted=True`` lifts the allow-list for files the user vouches for.
"""

from __future__ import annotations

import builtins
import importlib
import pickle
import types
from pathlib import Path
from typing import Any, BinaryIO

import torch

from ..checkpoint import CheckpointError

__all__ = ["UnsafeCheckpointError", "SafeUnpickler", "TrustedUnpickler", "torch_load", "ALLOWED_GLOBALS"]


class UnsafeCheckpointError(CheckpointError):
    """A pickled checkpoint needs a global outside the allow-list; loading it could run code."""

    def __init__(self, module: str, name: str, path: str | Path | None = None):
        self.module, self.name = module, name
        where = f"{path}: " if path is not None else ""
        super().__init__(
            f"{where}refusing to load {module}.{name}: this pickled checkpoint needs a global outside the "
            f"allow-list (OmegaConf configs, plain containers, tensors), and unpickling it could run code. "
            f"Load it only if you trust where it came from: load_policy(..., trust_checkpoint=True), the node "
            f"parameter trust_checkpoint:=true, or trust_checkpoint=true on the commands.")


# builtin types that dill writes as dill._dill._load_type(<name>) (its names and the plain ones)
_DILL_TYPES: dict[str, type] = {
    **{t.__name__: t for t in (dict, list, tuple, set, frozenset, int, float, complex, str, bytes, bytearray, bool,
                               slice, range, object)},
    "NoneType": type(None),
    "DictType": dict, "ListType": list, "TupleType": tuple, "IntType": int, "FloatType": float,
    "ComplexType": complex, "StringType": str, "BytesType": bytes, "BooleanType": bool, "SetType": set,
    "FrozenSetType": frozenset, "ObjectType": object,
}


def _dill_load_type(name: str) -> type:
    """Stand-in for ``dill._dill._load_type``: builtin types only."""
    if name not in _DILL_TYPES:
        raise UnsafeCheckpointError("dill._dill._load_type", repr(name))
    return _DILL_TYPES[name]


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes; other codecs are refused."""
    if encoding not in ("latin1", "latin-1"):
        raise UnsafeCheckpointError("_codecs.encode", f"encoding={encoding!r}")
    return text.encode(encoding, errors)


_BUILTINS = ("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "bool", "str", "bytes",
             "bytearray", "slice")
_TORCH = {"torch._utils": ("_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
                           "_rebuild_parameter_with_state"),
          "torch._tensor": ("_rebuild_from_type_v2",),
          "torch": ("Size", "Tensor", "device"),
          "torch.nn.parameter": ("Parameter",)}
_OMEGACONF = {"omegaconf.dictconfig": ("DictConfig",), "omegaconf.listconfig": ("ListConfig",),
              "omegaconf.base": ("ContainerMetadata", "Metadata"),
              "omegaconf.nodes": ("AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode", "BytesNode")}
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    [("builtins", n) for n in _BUILTINS] + [("__builtin__", n) for n in _BUILTINS]
    + [("collections", "OrderedDict"), ("collections", "defaultdict"), ("typing", "Any")]
    + [(m, n) for table in (_TORCH, _OMEGACONF) for m, names in table.items() for n in names])
_REPLACED = {("dill._dill", "_load_type"): _dill_load_type, ("dill.dill", "_load_type"): _dill_load_type,
             ("_codecs", "encode"): _latin1_encode}


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals (see module docstring)."""

    path: str | Path | None = None

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _REPLACED:
            return _REPLACED[(module, name)]
        if (module, name) in ALLOWED_GLOBALS:
            if module == "__builtin__":
                return getattr(builtins, name)
            return getattr(importlib.import_module(module), name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise UnsafeCheckpointError(module, name, self.path)


class TrustedUnpickler(pickle.Unpickler):
    """Resolves any global (the user trusts the file); dill's ``_load_type`` works without dill."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except ModuleNotFoundError:
            if (module, name) in _REPLACED:
                return _REPLACED[(module, name)]
            raise


def _pickle_module(unpickler: type[pickle.Unpickler], path: str | Path | None) -> types.ModuleType:
    """A stand-in ``pickle_module`` for torch.load whose Unpickler is ``unpickler``."""
    cls = type(unpickler.__name__, (unpickler,), {"path": path})
    module = types.ModuleType(f"paradigms_policy_{unpickler.__name__.lower()}")
    module.Unpickler = cls  # type: ignore[attr-defined]
    module.load = lambda file, **kwargs: cls(file, **kwargs).load()  # type: ignore[attr-defined]
    module.__dict__.update(dumps=pickle.dumps, dump=pickle.dump, Pickler=pickle.Pickler)
    return module


def torch_load(file: str | Path | BinaryIO, *, trusted: bool = False, map_location: Any = "cpu") -> Any:
    """``torch.load`` through the allow-listing unpickler (or, when ``trusted``, a full one).

    Raises UnsafeCheckpointError naming the first global outside the allow-list.
    """
    path = file if isinstance(file, (str, Path)) else None
    module = _pickle_module(TrustedUnpickler if trusted else SafeUnpickler, path)
    try:
        return torch.load(file, map_location=map_location, pickle_module=module, weights_only=False)
    except UnsafeCheckpointError:
        raise
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path or 'checkpoint'} is not a readable torch pickle: {exc}") from exc
