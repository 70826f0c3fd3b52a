"""Model files and state files without pickle: arrays as safetensors, everything else as JSON.

``save(model, directory)`` writes ``model.json`` (``{"format": "pynn.model", "version": 2,
"model": model.config()}``) and ``model.safetensors`` (the ``state_dict``; its metadata holds the
format, the SHA-256 of model.json and a SHA-256 digest of the tensors). ``load(directory)``
rebuilds the model. ``save_state(path, state, format)`` and ``load_state(path, format)`` keep a
nested dict of JSON values and arrays in ONE safetensors file (the JSON in the metadata, each
array as a tensor named by its path): training checkpoints use them.

Every file is written by ``write_atomic``: a temporary file in the same directory, flushed and
fsynced, renamed over the target with ``os.replace`` and the directory fsynced, so a reader (or
a crash at any moment) sees the old file or the new one, never a mixture.

The bytes are written by ``safetensors.numpy.save`` and decoded by ``safetensors.numpy.load``;
the library orders the metadata differently from run to run, so two saves of the same model hold
the same tensors and metadata but not always the same bytes.

Reading trusts nothing in a file and executes nothing from it. Before the library sees the
file, ``read_tensors`` checks the 8-byte header length against the file size and
``MAX_HEADER_BYTES``, parses the header as strict JSON (no duplicate keys, NaN or Infinity,
bounded nesting), checks its format, refuses dtypes other than float32, float64 and int64, and
compares names, dtypes and shapes with what the caller expects, reading no data. The library
then refuses malformed entries and byte ranges that do not tile the data exactly (truncated or
padded files); a SHA-256 digest over the names, dtypes, shapes and decoded arrays catches
flipped bytes. ``load`` also validates the whole architecture (``validate_config``, size
bounds included) before building anything, and refuses weights that are NaN or infinite: such
a model cannot predict, and ``save`` refuses to write one. Every error is a ValueError (or
FileNotFoundError) naming the file and the fault.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path

import numpy as np
import safetensors
import safetensors.numpy

from pynn.module import Module, from_config

FORMAT = "pynn.model"
VERSION = 2
WEIGHTS = "model.safetensors"
ARCHITECTURE = "model.json"
MAX_HEADER_BYTES = 16 * 2**20
MAX_JSON_BYTES = 2**20
MAX_STATE_DEPTH = 64
# safetensors' dtype names for the dtypes pynn stores.
_DTYPES = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8"), "I64": np.dtype("<i8")}
_TENSOR = "__tensor__"


def write_atomic(path, data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically and durably; returns the path.

    Writes ``.NAME.RANDOM.tmp`` beside it, fsyncs, renames it over ``path``, then fsyncs the
    directory so the rename itself survives a power cut. On an error the temporary file is
    removed; a process killed mid-write leaves it behind (``stale_temporaries`` finds them).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if os.name == "posix":
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def stale_temporaries(path) -> list[Path]:
    """Temporary files that ``write_atomic(path, ...)`` calls killed mid-write left behind."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


def nonfinite(tensors) -> list[str]:
    """The names of the floating-point arrays in ``tensors`` (a mapping) holding NaN or Inf."""
    return [k for k, a in tensors.items() if a.dtype.kind == "f" and not np.isfinite(a).all()]


# --- strict JSON -------------------------------------------------------------------------------
def _unique_keys(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r:.100}")
    return dict(pairs)


def _no_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def parse_json(text, where: str):
    """Parse strict JSON (no duplicate keys, NaN or Infinity); ValueError naming ``where``."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError(f"{where}: JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, too many digits
        raise ValueError(f"{where}: not valid JSON ({exc})") from None


# --- tensors -----------------------------------------------------------------------------------
def _tag(dtype: np.dtype, name: str) -> str:
    for tag, stored in _DTYPES.items():
        if dtype.newbyteorder("<") == stored:
            return tag
    raise TypeError(f"array {name!r} has dtype {dtype}; files hold {', '.join(map(str, _DTYPES.values()))}")


def _little_endian(array: np.ndarray) -> np.ndarray:
    return array.astype(array.dtype.newbyteorder("<"), order="C", copy=False)


def _digest(metadata: dict, tensors: dict) -> str:
    """SHA-256 of the metadata (without the digest) and, in name order, each array's name, dtype,
    shape and little-endian bytes: independent of how the header lays them out."""
    h = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode())
    for name in sorted(tensors):
        array = tensors[name]
        h.update(json.dumps([name, _tag(array.dtype, name), list(array.shape)]).encode())
        h.update(_little_endian(array))
    return h.hexdigest()


def encode_tensors(tensors, metadata: dict) -> bytes:
    """The safetensors bytes (``safetensors.numpy.save``) of arrays (float32, float64 or int64)
    and string metadata, with the ``sha256`` digest that ``read_tensors`` verifies added to the
    metadata. Raises TypeError for another dtype.

    The library orders the metadata differently from run to run, so two encodings of the same
    arrays may differ in bytes: compare files by their tensors and metadata.
    """
    arrays = {k: _little_endian(np.asarray(v)) for k, v in tensors.items()}
    return safetensors.numpy.save(arrays, metadata={**metadata, "sha256": _digest(metadata, arrays)})


def write_tensors(path, tensors, metadata: dict) -> Path:
    """Write ``encode_tensors(tensors, metadata)`` to ``path`` atomically."""
    return write_atomic(path, encode_tensors(tensors, metadata))


def _fail(path, message: str):
    raise ValueError(f"{path}: {message}")


def _declared(path, header: dict) -> dict:
    """Name -> (dtype, shape) of each tensor entry of ``header``, None for an entry without a
    dtype string and a shape list (the library refuses it). Refuses dtypes pynn files do not hold."""
    declared = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        tag, shape = (info.get("dtype"), info.get("shape")) if isinstance(info, dict) else (None, None)
        if isinstance(tag, str) and tag not in _DTYPES:
            _fail(path, f"tensor {name!r:.100} has dtype {tag!r:.20}; pynn files hold {', '.join(_DTYPES)}")
        declared[name] = (_DTYPES[tag], tuple(shape)) if isinstance(tag, str) and isinstance(shape, list) else None
    return declared


def _compare(path, declared: dict, expected: dict) -> None:
    """Names, dtypes and shapes against ``expected`` (name -> (dtype, shape)), all faults at once."""
    problems = [f"missing tensors: {', '.join(k for k in expected if k not in declared)}"] \
        if any(k not in declared for k in expected) else []
    unexpected = [k for k in declared if k not in expected]
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected)[:500]}")
    for k, (dtype, shape) in expected.items():
        got = declared.get(k)
        if got is not None and got != (np.dtype(dtype).newbyteorder("<"), tuple(shape)):
            problems.append(f"{k}: expected {np.dtype(dtype)} {tuple(shape)}, got {got[0]} {got[1]!r:.100}")
    if problems:
        _fail(path, "tensors do not match: " + "; ".join(problems))


def _decode(path, data: bytes) -> dict:
    """``safetensors.numpy.load``, which checks every entry, the byte ranges tiling the data and
    the file's length; its errors become a ValueError naming the file."""
    try:
        return safetensors.numpy.load(data)
    except (safetensors.SafetensorError, ValueError) as exc:  # ValueError: numpy refuses the shape
        _fail(path, f"the safetensors library cannot read it: {exc}")


def read_tensors(path, *, format: str, expected: dict | None = None) -> tuple[dict, dict]:
    """Read a file of ``write_tensors``: returns (name -> array, metadata without the digest).

    Before handing the file to the safetensors library, checks the file size and the 8-byte
    header length (at most ``MAX_HEADER_BYTES`` and the file size), parses the header as strict
    JSON, checks that its metadata's ``format`` is ``format``, that every dtype is F32, F64 or
    I64, and the entries against ``expected`` (name -> (dtype, shape)), reading no data. The
    library then checks the entries and their byte ranges and decodes the arrays; finally the
    digest is verified. Raises FileNotFoundError for a missing file and ValueError naming the
    file and the fault otherwise.
    """
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            _fail(path, f"truncated: {size} bytes; a safetensors file starts with an 8-byte header length")
        prefix = f.read(8)
        n = int.from_bytes(prefix, "little")
        if n > MAX_HEADER_BYTES:
            _fail(path, f"header length {n:,} exceeds the limit of {MAX_HEADER_BYTES:,} bytes: not a pynn file, or "
                  "corrupt")
        if n > size - 8:
            _fail(path, f"header length {n:,} is larger than the rest of the file ({size - 8:,} bytes): truncated "
                  "or corrupt")
        text = f.read(n)
        header = parse_json(text, f"{path}: header")
        if not isinstance(header, dict):
            _fail(path, f"the header must be a JSON object, got {type(header).__name__}")
        metadata = header.get("__metadata__")
        found = metadata.get("format") if isinstance(metadata, dict) else None
        if found != format:
            _fail(path, f"not a {format} file (its format is {found!r:.100})")
        declared = _declared(path, header)
        if expected is not None:
            _compare(path, declared, expected)
        # The library decodes exactly the header checked above, whatever happens to the file.
        tensors = _decode(path, prefix + text + f.read())
    metadata = dict(metadata)  # the library checked that it maps strings to strings
    digest = metadata.pop("sha256", None)
    if digest != _digest(metadata, tensors):
        _fail(path, "contents do not match their SHA-256 digest: the file is corrupt (flipped or altered bytes)"
              if digest else "has no sha256 digest: not written by pynn")
    # In the header's order (the library's varies), writable: it may return views of its buffer.
    return {k: np.array(tensors[k], tensors[k].dtype.newbyteorder("=")) for k in declared}, metadata


# --- nested state ------------------------------------------------------------------------------
def _split(obj, name: str, tensors: dict):
    """JSON-able copy of ``obj`` with each array replaced by ``{"__tensor__": name}``."""
    if isinstance(obj, np.ndarray):
        if name in tensors:
            raise ValueError(f"two arrays of the state are both named {name!r}")
        tensors[name] = obj
        return {_TENSOR: name}
    if isinstance(obj, dict):
        if _TENSOR in obj or not all(isinstance(k, str) for k in obj):
            raise TypeError(f"state entry {name!r} must have string keys other than {_TENSOR!r}")
        return {k: _split(v, f"{name}.{k}" if name else k, tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split(v, f"{name}.{i}" if name else str(i), tensors) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"state entry {name!r} is a {type(obj).__name__}, which a state file cannot hold")


def _join(obj, tensors: dict, used: set, path, depth: int = 0):
    """Inverse of ``_split``: each tensor must be referenced exactly once."""
    if depth > MAX_STATE_DEPTH:
        _fail(path, f"state nested more than {MAX_STATE_DEPTH} deep")
    if isinstance(obj, list):
        return [_join(v, tensors, used, path, depth + 1) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if _TENSOR in obj:
        name = obj[_TENSOR]
        if len(obj) != 1 or not isinstance(name, str) or name not in tensors or name in used:
            _fail(path, f"bad tensor reference {obj!r:.200}")
        used.add(name)
        return tensors[name]
    return {k: _join(v, tensors, used, path, depth + 1) for k, v in obj.items()}


def save_state(path, state: dict, format: str) -> Path:
    """Write a nested dict of JSON values (str, int, float, bool, None, lists, dicts with string
    keys) and numpy arrays as one file, atomically. Raises TypeError for other values and
    ValueError for NaN or infinite floats outside arrays."""
    tensors = {}
    text = json.dumps(_split(state, "", tensors), allow_nan=False, separators=(",", ":"))
    return write_tensors(path, tensors, {"format": format, "state": text})


def load_state(path, format: str) -> dict:
    """Read a ``save_state`` file of ``format``; ValueError naming the file for any fault."""
    tensors, metadata = read_tensors(path, format=format)
    if set(metadata) != {"format", "state"}:
        _fail(path, f"metadata must hold format and state, got {sorted(metadata)}")
    used = set()
    state = _join(parse_json(metadata["state"], f"{path}: state"), tensors, used, path)
    if set(tensors) - used:
        _fail(path, f"tensors not referenced by the state: {', '.join(sorted(set(tensors) - used))[:500]}")
    if not isinstance(state, dict):
        _fail(path, f"the state must be a JSON object, got {type(state).__name__}")
    return state


# --- models ------------------------------------------------------------------------------------
def save(model: Module, directory) -> Path:
    """Write ``model.json`` and ``model.safetensors`` into ``directory`` (created if needed),
    each atomically; returns the directory as a Path.

    Raises TypeError when ``model`` is not a Module and ValueError (writing nothing) when a
    parameter or buffer holds NaN or Inf.
    """
    if not isinstance(model, Module):
        raise TypeError(f"save expects a Module, got {type(model).__name__}")
    state = model.state_dict()
    bad = nonfinite(state)
    if bad:
        raise ValueError(f"refusing to save a model with NaN or infinite values in {', '.join(bad)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"format": FORMAT, "version": VERSION, "model": model.config()}, indent=2) + "\n"
    write_atomic(directory / ARCHITECTURE, text.encode())
    write_tensors(directory / WEIGHTS, state, {"format": FORMAT, "architecture_sha256": _sha256(text.encode())})
    return directory


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_model(path: Path) -> tuple[Module, bytes]:
    """Build the model that the architecture file describes (validated first, bounds included)."""
    with open(path, "rb") as f:
        raw = f.read(MAX_JSON_BYTES + 1)
    if len(raw) > MAX_JSON_BYTES:
        _fail(path, f"larger than {MAX_JSON_BYTES:,} bytes: not an architecture file")
    header = parse_json(raw, str(path))
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        _fail(path, f"not a {FORMAT} file")
    if header.get("version") != VERSION:
        _fail(path, f"has version {header.get('version')!r:.50}; this pynn reads {VERSION}")
    if set(header) != {"format", "version", "model"}:
        _fail(path, f"expected the keys format, version and model, got {sorted(header)}")
    try:
        return from_config(header["model"]), raw
    except ValueError as exc:
        _fail(path, str(exc))


def load(directory) -> Module:
    """Rebuild the model saved in ``directory``, in training mode, float32.

    Raises FileNotFoundError for a missing file, and ValueError naming the file for: JSON that is
    malformed, too large or deep, of another format or version, with extra keys; an architecture
    that fails ``validate_config`` (unknown module type, arguments of a wrong type or absurd
    size: checked before anything is built) or a constructor's range checks; a weights file that
    is truncated, corrupt, of an unsupported dtype, whose tensors do not match the architecture
    in name, dtype or shape, that was not saved with this model.json, or that holds NaN or Inf.
    """
    directory = Path(directory)
    model, raw = _read_model(directory / ARCHITECTURE)
    path = directory / WEIGHTS
    expected = {k: (a.dtype, a.shape) for k, a in model.state_dict().items()}
    tensors, metadata = read_tensors(path, format=FORMAT, expected=expected)
    if metadata.get("architecture_sha256") != _sha256(raw):
        _fail(path, f"was not saved together with {ARCHITECTURE} (it was edited or comes from another save)")
    bad = nonfinite(tensors)
    if bad:
        _fail(path, f"NaN or infinite weights in {', '.join(bad)}")
    model.load_state_dict(tensors)
    return model
