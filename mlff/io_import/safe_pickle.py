"""Read a ``torch.save`` file of pickled modules (mace-torch ``.model`` files) as plain data,
without running any code from it.

``torch.load(weights_only=False)`` executes whatever the pickle names: any importable function
with any arguments. Here the pickle is read by an unpickler whose ``find_class`` allows only an
explicit list of names (the modules and containers a model is made of, and torch's tensor
rebuilders). Every allowed class is replaced by an inert :class:`Pickled` record of its name,
constructor arguments and state; nothing from mace or e3nn is imported and no ``__setstate__``
of a real class runs. Anything else (``os.system``, ``builtins.eval``, a class of a package not
on the list, ...) is refused with :class:`UnsafePickleError` naming the global.

Written by hand because torch's own ``weights_only`` unpickler refuses module pickles outright,
and an allow-list of real classes would run their ``__setstate__`` (e3nn's codegen modules
compile code on unpickling).

Tensors come back as real ``torch.Tensor`` (storages read from the zip archive as raw bytes).
"""

from __future__ import annotations

import collections
import fnmatch
import io
import os
import pickle
import zipfile
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import torch

from mlff.errors import ModelFileError


class UnsafePickleError(ModelFileError):
    """The file names a global outside the allow-list (it could run code on loading)."""


class UnsupportedModelError(ModelFileError):
    """A model with a part mlff's models do not have (the message names it)."""


#: torch storage class names -> dtype (the pickle names them; they are never instantiated)
_STORAGES = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}

#: the classes that make up a mace-torch model (patterns on ``module.name``): recorded inertly
MACE_ALLOWED: Tuple[str, ...] = (
    "mace.modules.*",
    "e3nn.o3.*", "e3nn.nn.*", "e3nn.math.*", "e3nn.util.*",
    "torch.nn.modules.*",
    "torch.fx.graph_module.reduce_graph_module",  # e3nn's generated code: recorded, never run
    "torch.fx.graph_module.reduce_package_graph_module",
    "torch.fx._symbolic_trace.Tracer",
    "torch.fx.graph.Graph",
    "torch.nn.functional.*",  # activation functions named by reference
    "torch.jit._script.RecursiveScriptModule",
)


@dataclass
class Pickled:
    """An inert record of a pickled object of an allowed class.

    Attributes:
        qualname: ``module.Class`` as the pickle names it.
        args: constructor arguments (``NEWOBJ``/``REDUCE``).
        state: what ``__setstate__`` would have received (usually the instance ``__dict__``).
    """

    qualname: str
    args: Tuple[Any, ...] = ()
    state: Any = None

    @property
    def name(self) -> str:
        return self.qualname.rsplit(".", 1)[-1]

    @property
    def attrs(self) -> Dict[str, Any]:
        """The instance dict (for a module: its attributes, ``_parameters``, ``_modules``...)."""
        state = self.state
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
            merged = dict(state[0] or {})
            merged.update(state[1] or {})
            return merged
        return state if isinstance(state, dict) else {}

    # --- torch.nn.Module views ---
    @property
    def children(self) -> Dict[str, "Pickled"]:
        return dict(self.attrs.get("_modules", {}) or {})

    def child(self, name: str) -> "Pickled":
        children = self.children
        if name not in children:
            raise ModelFileError(f"{self.qualname} has no submodule {name!r} (has {sorted(children)})")
        return children[name]

    def tensors(self) -> Dict[str, torch.Tensor]:
        """Own parameters and buffers (not the children's)."""
        out: Dict[str, torch.Tensor] = {}
        for key in ("_parameters", "_buffers"):
            for k, v in (self.attrs.get(key) or {}).items():
                if v is not None:
                    out[k] = v
        return out

    def tensor(self, name: str) -> torch.Tensor:
        t = self.tensors()
        if name not in t:
            raise ModelFileError(f"{self.qualname} has no parameter or buffer {name!r} (has {sorted(t)})")
        return t[name]

    def __setstate__(self, state: Any) -> None:  # BUILD
        self.state = state

    def __reduce__(self):  # copy/deepcopy/pickle of the record itself
        return (Pickled, (self.qualname, self.args, self.state))


def _recorded(qualname: str) -> type:
    """A throwaway class whose ``__new__`` builds a :class:`Pickled` (for ``NEWOBJ``, which calls
    ``cls.__new__(cls, *args)`` on what ``find_class`` returned)."""

    def new(cls, *args: Any) -> Pickled:
        return Pickled(qualname, args)

    # calling the class (REDUCE) also goes through __new__, which returns a Pickled
    return type("Recorded", (), {"__new__": new, "qualname": qualname})


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: Iterable[int], stride: Iterable[int],
                    *_ignored: Any) -> torch.Tensor:
    """torch._utils._rebuild_tensor(_v2): a view of a flat storage tensor."""
    return torch.as_strided(storage, tuple(size), tuple(stride), int(offset)).clone()


def _rebuild_parameter(data: torch.Tensor, requires_grad: bool, *_ignored: Any) -> torch.Tensor:
    return data


def _numpy_scalar(dtype: Any, data: bytes) -> Any:
    import numpy as np

    if isinstance(dtype, Pickled):
        dtype = np.dtype(*dtype.args[:1])
    return np.frombuffer(data, dtype=dtype)[0].item()


def _encode(text: str, encoding: str = "latin1") -> bytes:  # how protocol 2 pickles bytes
    return text.encode(encoding)


class PlainDict(dict):
    """What a pickled dict subclass of a training framework becomes (Lightning's
    ``AttributeDict`` of hyperparameters): its items, nothing of its class."""

    def __setstate__(self, state: Any) -> None:  # BUILD of an instance __dict__, if any
        if isinstance(state, dict):
            self.update(state)


#: dict subclasses that hold only data (their items are read, their class never imported)
_DICTS = ("lightning.fabric.utilities.data.AttributeDict",
          "lightning.pytorch.utilities.parsing.AttributeDict",
          "pytorch_lightning.utilities.parsing.AttributeDict",
          "lightning_fabric.utilities.data.AttributeDict")

#: safe functions the pickle may name, by ``module.name``
_FUNCTIONS = {
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "collections.OrderedDict": collections.OrderedDict,
    "builtins.set": set, "__builtin__.set": set,
    "builtins.frozenset": frozenset, "__builtin__.frozenset": frozenset,
    "builtins.slice": slice, "__builtin__.slice": slice,
    "builtins.complex": complex,
    "_codecs.encode": _encode,
    "numpy.core.multiarray.scalar": _numpy_scalar,
    "numpy._core.multiarray.scalar": _numpy_scalar,
    "torch.device": lambda *a: str(a[0]) if a else "cpu",
    "torch.Size": lambda *a: tuple(*a),
    **{name: PlainDict for name in _DICTS},
}
_DTYPES = {f"torch.{n}": getattr(torch, n) for n in ("float64", "float32", "float16", "int64", "int32", "bool")}


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, allowed: Tuple[str, ...]) -> None:
        super().__init__(io.BytesIO(data))
        self.archive = archive
        self.prefix = prefix
        self.allowed = allowed
        self.storages: Dict[str, torch.Tensor] = {}
        self.names: List[str] = []

    def find_class(self, module: str, name: str) -> Any:
        qualname = f"{module}.{name}"
        self.names.append(qualname)
        if qualname in _FUNCTIONS:
            return _FUNCTIONS[qualname]
        if qualname in _DTYPES:
            return _DTYPES[qualname]
        if module == "torch" and name in _STORAGES:
            return ("storage-type", _STORAGES[name])
        if qualname == "numpy.dtype":
            return _recorded(qualname)
        if any(fnmatch.fnmatchcase(qualname, pattern) for pattern in self.allowed):
            return _recorded(qualname)
        raise UnsafePickleError(
            f"refusing to load: the pickle names the global {qualname!r}, which is not part of a "
            f"model (allowed: {', '.join(self.allowed)}, torch tensors and plain containers); "
            "the file is not a trusted model: an ordinary unpickler would run code from it"
        )

    def persistent_load(self, pid: Any) -> torch.Tensor:
        # torch's zip format: ('storage', storage_type, key, location, numel)
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise UnsafePickleError(f"unknown persistent id {pid!r} in the pickle")
        storage_type, key = pid[1], str(pid[2])
        if not (isinstance(storage_type, tuple) and storage_type[0] == "storage-type"):
            dtype = getattr(storage_type, "dtype", None)
            if not isinstance(dtype, torch.dtype):
                raise UnsafePickleError(f"unknown storage type {storage_type!r}")
        else:
            dtype = storage_type[1]
        if key not in self.storages:
            raw = self.archive.read(f"{self.prefix}data/{key}")
            flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.zeros(0, dtype=torch.uint8)
            self.storages[key] = flat.view(dtype) if flat.numel() else torch.zeros(0, dtype=dtype)
        return self.storages[key]


def load_pickled(path: Union[str, os.PathLike], allowed: Tuple[str, ...] = MACE_ALLOWED) -> Any:
    """Unpickle a ``torch.save`` zip archive into :class:`Pickled` records and tensors.

    Raises:
        UnsafePickleError: the pickle names a global outside ``allowed`` (nothing has run).
        ModelFileError: not a torch zip archive (the legacy non-zip format is not read).
    """
    path = os.fspath(path)
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path} is not a torch.save zip archive (torch >= 1.6 format); "
                             "open it with the code that wrote it and save it again with torch.save")
    with zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise ModelFileError(f"{path}: expected one <name>/data.pkl in the archive, found {pkl}")
        prefix = pkl[0][: -len("data.pkl")]
        unpickler = _Unpickler(archive.read(pkl[0]), archive, prefix, allowed)
        try:
            return unpickler.load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, AttributeError) as exc:
            raise ModelFileError(f"{path}: the pickle cannot be read as plain data "
                                 f"({type(exc).__name__}: {exc})") from exc


def find(root: Pickled, name: str) -> List[Tuple[str, Pickled]]:
    """All submodules (depth first, with their dotted paths) whose class name is ``name``."""
    out: List[Tuple[str, Pickled]] = []

    def walk(node: Pickled, prefix: str) -> None:
        for key, child in node.children.items():
            if not isinstance(child, Pickled):
                continue
            path = f"{prefix}{key}"
            if child.name == name:
                out.append((path, child))
            walk(child, path + ".")

    walk(root, "")
    return out


def attr(node: Pickled, name: str, default: Optional[Any] = None) -> Any:
    """An attribute of a pickled module: instance dict, then parameters/buffers."""
    attrs = node.attrs
    if name in attrs:
        return attrs[name]
    tensors = node.tensors()
    if name in tensors:
        return tensors[name]
    return default


def instructions(node: Pickled) -> List[Tuple]:
    """The ``instructions`` of a pickled e3nn layer as plain tuples."""
    return [tuple(ins.args) if isinstance(ins, Pickled) else tuple(ins) for ins in node.attrs["instructions"]]


def scalar(value: object) -> float:
    """A number or one-element tensor -> float."""
    return float(value.item() if isinstance(value, torch.Tensor) else value)
