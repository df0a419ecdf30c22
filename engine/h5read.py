"""Reading our HDF5 files without trusting them: each attribute, group and dataset is checked for the type
and shape the schema gives it before it is read, so a damaged file is one error line, never a traceback,
a hang or a wrong value loaded.

The errors a caller can act on: ``DamagedFile`` (truncated, not HDF5, a group or dataset missing or
malformed: it will never load), ``NewerSchema`` (a later build wrote it: keep it), ``FileUnavailable``
(locked by another process, no permission: the file may be fine).
"""
from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .readcheck import Malformed, is_int, is_real, one_line, shown

# What h5py raises on a file whose structure is damaged (a bad object header, B-tree or heap, a datatype it
# cannot map): the reader turns each into DamagedFile. MemoryError is left out: it may be this machine's.
H5_ERRORS = (KeyError, OSError, RuntimeError, TypeError, ValueError, IndexError, OverflowError)
# Most values one point's scale (or extra array) may hold: far above any layer's channel count, far below
# what a damaged dataspace may claim, so a corrupted header is refused before anything is allocated.
MAX_POINT_VALUES = 1 << 20
MAX_SERIES_VALUES = 1 << 26   # a history or diagnosis array: millions of evaluations at most
MAX_BITS = 16
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
GLOBAL_HEAP = b"GCOL\x01\x00\x00\x00"   # a global heap collection's signature and version 1
# errno values of an HDF5 file that exists but cannot be opened now: a lock held elsewhere, no permission
UNAVAILABLE_ERRNOS = {errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES, errno.EPERM, errno.EBUSY}


class ScaleFileError(ValueError):
    """A scale file that cannot be read, or does not fit the model it is loaded into."""


class DamagedFile(ScaleFileError):
    """Truncated, not HDF5, or missing or malforming what the schema needs: it will never load."""


class NewerSchema(ScaleFileError):
    """Written by a later build: readable there, so never to be replaced here."""


class FileUnavailable(ScaleFileError):
    """Exists but cannot be opened now (locked by another process, no permission): may be fine."""


REQUIRED = object()   # the default of an attribute that must be there


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def plain_attrs(obj: h5py.HLObject, where: str) -> dict[str, Any]:
    """``obj``'s attributes as plain values. Every attribute the writers make is a single value (lists and
    dicts as JSON text), so an array, an empty attribute or a compound is damage."""
    out = {}
    for name in obj.attrs:
        attr = obj.attrs.get_id(name)
        if attr.shape != ():
            raise Malformed(f"{where} attribute {name!r} has shape {attr.shape}, not a single value")
        if h5py.check_string_dtype(attr.dtype) is not None:
            value = obj.attrs[name]
            if isinstance(value, str) and not _utf8(value):
                raise Malformed(f"{where} attribute {name!r} is not valid UTF-8 text")
        # checked before reading: HDF5 can crash converting a damaged variable-length type that is not a string
        elif _standard_number(attr.get_type(), attr.dtype):
            value = np.empty((), attr.dtype)
            attr.read(value)
            value = value[()]
        else:
            raise Malformed(f"{where} attribute {name!r} is of type {attr.dtype}, not a number or text")
        out[name] = _attr(value)
    return out


def _utf8(text: str) -> bool:
    """False for text h5py decoded with surrogate escapes: the bytes were not UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _standard_number(tid: h5py.h5t.TypeID, dtype: np.dtype) -> bool:
    """The HDF5 type h5py writes for ``dtype`` (an IEEE float, a two's-complement integer, its boolean enum).
    A damaged datatype message can still map to a numpy number (another mantissa size or exponent bias) and
    convert every value wrongly."""
    return dtype.kind in "iufb" and tid.equal(h5py.h5t.py_create(dtype))


def integer_attr(attrs: dict[str, Any], key: str, where: str, low: int | None = None, high: int | None = None,
                 default: Any = REQUIRED) -> Any:
    """``attrs[key]``, an integer in ``[low, high]``; ``default`` when absent (required if not given)."""
    value = _present(attrs, key, where, default)
    if value is default:
        return value
    if not is_int(value):
        raise Malformed(f"{where} attribute {key!r} is {shown(value)}, not an integer")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"{low}..{high}" if high is not None else f"at least {low}" if low is not None else f"at most {high}"
        raise Malformed(f"{where} attribute {key!r} is {value}, not {bounds}")
    return value


def number_attr(attrs: dict[str, Any], key: str, where: str, default: Any = REQUIRED) -> Any:
    """``attrs[key]``, a real number (NaN and infinities are numbers too); ``default`` when absent."""
    value = _present(attrs, key, where, default)
    if value is not default and not is_real(value):
        raise Malformed(f"{where} attribute {key!r} is {shown(value)}, not a number")
    return value


def text_attr(attrs: dict[str, Any], key: str, where: str, choices: tuple[str, ...] | None = None,
              default: Any = REQUIRED) -> Any:
    """``attrs[key]``, a string (one of ``choices`` when given); ``default`` when absent."""
    value = _present(attrs, key, where, default)
    if value is default:
        return value
    if not isinstance(value, str):
        raise Malformed(f"{where} attribute {key!r} is {shown(value)}, not text")
    if choices is not None and value not in choices:
        raise Malformed(f"{where} attribute {key!r} is {shown(value)}, not one of {', '.join(choices)}")
    return value


def flag_attr(attrs: dict[str, Any], key: str, where: str, default: Any = REQUIRED) -> Any:
    """``attrs[key]``, a boolean (h5py stores one as an enum; 0 and 1 are read as one too)."""
    value = _present(attrs, key, where, default)
    if value is default:
        return value
    if value not in (0, 1) or not isinstance(value, (bool, int)):
        raise Malformed(f"{where} attribute {key!r} is {shown(value)}, not true or false")
    return bool(value)


def json_attr(attrs: dict[str, Any], key: str, where: str, kind: type) -> Any:
    """A JSON attribute that must decode to ``kind`` (dict or list); "" (written for None) and absent give None."""
    value = attrs.get(key, "")
    if value == "":
        return None
    if not isinstance(value, kind):
        raise Malformed(f"{where} attribute {key!r} is not a JSON {kind.__name__}: {shown(value)}")
    return value


def _present(attrs: dict[str, Any], key: str, where: str, default: Any) -> Any:
    if key in attrs:
        return attrs[key]
    if default is REQUIRED:
        raise Malformed(f"{where} has no attribute {key!r}")
    return default


def child(group: h5py.Group, key: str, where: str, kind: type) -> Any:
    """``group[key]``, which must be a ``kind`` (h5py.Group or h5py.Dataset)."""
    item = group.get(key)
    if item is None:
        raise Malformed(f"{where} has no {key!r}")
    if not isinstance(item, kind):
        raise Malformed(f"{where}/{key} is not {'a group' if kind is h5py.Group else 'a dataset'}")
    return item


def members(group: h5py.Group, where: str, kind: type) -> list[tuple[str, Any]]:
    """``group``'s members, each of which must be a ``kind``."""
    out = list(group.items())
    for key, item in out:
        if not isinstance(item, kind):
            raise Malformed(f"{where}/{key} is not {'a group' if kind is h5py.Group else 'a dataset'}")
    return out


def array(dataset: h5py.Dataset, where: str, kinds: str, max_ndim: int, max_size: int) -> np.ndarray:
    """The dataset's values, after checking its type (numpy kind letters) and shape without reading it."""
    if dataset.dtype.kind not in kinds:
        wanted = {"f": "floating point", "iu": "integer", "fiu": "numeric"}.get(kinds, kinds)
        raise Malformed(f"{where} is of type {dataset.dtype}, not {wanted}")
    if not _standard_number(dataset.id.get_type(), dataset.dtype):
        raise Malformed(f"{where} has a damaged datatype (not a standard {dataset.dtype})")
    if dataset.shape is None:
        raise Malformed(f"{where} holds no values (an empty dataspace)")
    if len(dataset.shape) > max_ndim or dataset.size > max_size:
        raise Malformed(f"{where} has shape {dataset.shape}; at most {max_ndim}-D and {max_size} values")
    return dataset[()]


def _text_heap_problem(data: bytes) -> str | None:
    """HDF5 keeps variable-length text in global heap collections ("GCOL"). A damaged object size in one
    makes the library allocate gigabytes or loop forever before it reports anything, so each collection is
    walked here first: its objects (and the free space closing it) must tile it exactly."""
    if not data.startswith(HDF5_SIGNATURE):
        return None
    lengths = data[14] if data[8] in (0, 1) else data[10]   # the superblock's "size of lengths"
    header = 8 + lengths   # object index (2), reference count (2), reserved (4), size
    start = data.find(GLOBAL_HEAP)
    while start >= 0:
        end = start + int.from_bytes(data[start + 8:start + 8 + lengths], "little")
        at = start + 8 + lengths
        while at + header <= end:
            index, size = int.from_bytes(data[at:at + 2], "little"), int.from_bytes(data[at + 8:at + header], "little")
            if index == 0:   # the free space: the rest of the collection
                at = at + size if size == end - at else end + 1
                break
            at += header + -(-size // 8) * 8
        if end > len(data) or not 0 <= end - at < header:
            return f"the text heap at byte {start} is damaged (its objects do not fill it)"
        start = data.find(GLOBAL_HEAP, start + 4)
    return None


def open_for_reading(path: str | Path, what: str = "scale file") -> h5py.File:
    """``path`` opened read-only, or the error a user should read: it is missing (FileNotFoundError),
    cannot be opened now (FileUnavailable), or is not HDF5 or damaged where HDF5 cannot be trusted to
    notice (DamagedFile)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        f = h5py.File(path, "r")
    except H5_ERRORS as exc:
        if isinstance(exc, OSError) and (exc.errno in UNAVAILABLE_ERRNOS
                                         or isinstance(exc, (PermissionError, BlockingIOError))):
            raise FileUnavailable(f"{path} cannot be opened now ({one_line(exc.strerror or exc)}): another process "
                                  "may be writing it, or this user may not read it") from None
        raise DamagedFile(f"{path} is not a readable HDF5 file (truncated or another format): "
                          f"{one_line(exc)}") from None
    problem = _text_heap_problem(path.read_bytes())
    if problem:
        f.close()
        raise DamagedFile(f"{path}: {problem}")
    return f
