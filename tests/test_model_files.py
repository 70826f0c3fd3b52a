"""Hostile model files: every truncated, corrupted, oversized, malformed or mismatched file in
the tables below is refused with a ValueError (or FileNotFoundError) that names the file and the
fault, before anything is built from it, whether pynn's checks or the safetensors library find
the fault; plus atomic writing and saves that repeat the same tensors and metadata."""
import hashlib
import json
import os
import time

import numpy as np
import pytest
import safetensors.numpy

import pynn
from pynn import serialization
from pynn.serialization import ARCHITECTURE, FORMAT, WEIGHTS, write_atomic, write_tensors
from tests.support import saved_weights

# How the errors that the safetensors library reports begin, after the file's name.
LIBRARY = "the safetensors library cannot read it: .*"


def _model():
    pynn.manual_seed(0)
    return pynn.Sequential(pynn.Flatten(), pynn.Linear(12, 8), pynn.BatchNorm1d(8), pynn.ReLU(), pynn.Dropout(0.2),
                           pynn.Linear(8, 3))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved model: the directory, the JSON text and the state_dict."""
    directory = pynn.save(_model(), tmp_path_factory.mktemp("saved"))
    return directory, (directory / ARCHITECTURE).read_bytes(), (directory / WEIGHTS).read_bytes()


# --- helpers that make one fault each ------------------------------------------------------------
# The library writes only well-formed files: the malformed ones are made by editing the header.
def split(raw: bytes):
    """(header dict, data bytes) of a safetensors file."""
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def join(header, data: bytes) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + data


def edit_header(edit):
    """A weights file whose parsed header was changed by ``edit(header)``."""
    def make(raw, arch):
        header, data = split(raw)
        edit(header)
        return join(header, data)
    return make


def flip(where, bit: int = 0):
    """Flip one bit of the byte at ``where(raw)``."""
    def make(raw, arch):
        b = bytearray(raw)
        b[where(raw)] ^= 1 << bit
        return bytes(b)
    return make


def data_start(raw):
    return 8 + int.from_bytes(raw[:8], "little")


def digest_char(raw):
    return raw.index(b'"sha256":"') + 12


def with_tensors(change, metadata=None):
    """Weights encoded by pynn's writer (``safetensors.numpy.save`` with a valid digest) after
    ``change(state)``: only the intended fault is present."""
    def make(raw, arch):
        state = dict(_model().state_dict())
        change(state)
        meta = {"format": FORMAT, "architecture_sha256": hashlib.sha256(arch).hexdigest(), **(metadata or {})}
        return serialization.encode_tensors(state, meta)
    return make


def set_item(key, value):
    return lambda state: state.__setitem__(key, value)


def without_digest(raw, arch):
    header, data = split(raw)
    del header["__metadata__"]["sha256"]
    return join(header, data)


def foreign(raw, arch):
    """A valid safetensors file from another program (no pynn metadata)."""
    return safetensors.numpy.save({k: v for k, v in _model().state_dict().items()})


def f16(raw, arch):
    return safetensors.numpy.save({"1.weight": np.zeros((8, 12), np.float16)}, metadata={"format": FORMAT})


def overlap(header):
    header["2.weight"]["data_offsets"] = header["1.bias"]["data_offsets"]  # both 8 floats


def short_range(header):
    header["1.weight"]["data_offsets"][1] -= 4  # one float fewer than its shape needs, then a gap


def nested_header(raw, arch):
    return join(b"[" * 100_000 + b"]" * 100_000, b"")


def model_json(doc=None, text=None):
    """An architecture file replaced by ``doc`` (a function of the saved one) or by raw ``text``."""
    def make(arch):
        if text is not None:
            return text
        saved = json.loads(arch)
        return json.dumps(doc(saved)).encode()
    return make


def child(cfg, index=1):
    """Replace the architecture's child ``index`` by ``cfg``."""
    def edit(saved):
        saved["model"]["children"][index] = cfg
        return saved
    return edit


def nested(depth):
    cfg = {"type": "ReLU"}
    for _ in range(depth):
        cfg = {"type": "Sequential", "children": [cfg]}
    return lambda saved: {**saved, "model": cfg}


def many_big_layers(saved):
    saved["model"]["children"] = [{"type": "Linear", "kwargs": {"in_features": 2**14, "out_features": 2**14}}] * 5
    return saved


# (name, file it breaks, how, the error's pattern)
WEIGHT_CASES = [
    ("empty", lambda raw, arch: b"", "truncated: 0 bytes"),
    ("five bytes", lambda raw, arch: raw[:5], "truncated: 5 bytes"),
    ("cut in the header", lambda raw, arch: raw[:40], r"header length [\d,]+ is larger than the rest of the file"),
    ("cut in the data", lambda raw, arch: raw[:-100], LIBRARY + "file not fully covered"),
    ("trailing bytes", lambda raw, arch: raw + b"\0" * 16, LIBRARY + "file not fully covered"),
    ("header length 2**63", lambda raw, arch: (2**63).to_bytes(8, "little") + raw[8:], "exceeds the limit"),
    ("header length past the end", lambda raw, arch: (len(raw)).to_bytes(8, "little") + raw[8:],
     "larger than the rest of the file"),
    ("header not JSON", lambda raw, arch: join(b"<html>garbage</html>", split(raw)[1]), "not valid JSON .Expecting"),
    ("header not UTF-8", lambda raw, arch: join(b'{"\xff": 1}', b""), "not valid JSON"),
    ("header a list", lambda raw, arch: join(b"[1, 2]", b""), "must be a JSON object"),
    ("header nested 100,000 deep", nested_header, "nested too deeply"),
    ("duplicate tensor name", lambda raw, arch: join(
        b'{"a": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}, '
        b'"a": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}}', b"\0" * 4), "duplicate key 'a'"),
    ("NaN in the header", lambda raw, arch: join(b'{"__metadata__": {"format": NaN}}', b""), "NaN is not a JSON"),
    ("format not a string", edit_header(lambda h: h["__metadata__"].update(format=1)),
     "not a pynn.model file .its format is 1"),
    ("metadata not strings", edit_header(lambda h: h["__metadata__"].update(architecture_sha256=1)),
     LIBRARY + "invalid type: integer `1`, expected a string"),
    ("another program's file", foreign, "not a pynn.model file"),
    ("entry without dtype", edit_header(lambda h: h["1.weight"].pop("dtype")), LIBRARY + "missing field `dtype`"),
    ("entry not an object", edit_header(lambda h: h.update({"1.bias": "F32"})), LIBRARY + "invalid type: string"),
    ("unsupported dtype F16", f16, "has dtype 'F16'"),
    ("unknown dtype", edit_header(lambda h: h["1.weight"].update(dtype="Q7")), "has dtype 'Q7'"),
    ("negative shape", edit_header(lambda h: h["1.bias"].update(shape=[-8])),
     r"1.bias: expected float32 \(8,\), got float32 \(-8,\)"),
    ("shape of strings", edit_header(lambda h: h["1.bias"].update(shape=["8"])), r"got float32 \('8',\)"),
    ("shape of floats", edit_header(lambda h: h["1.bias"].update(shape=[8.0])),
     LIBRARY + "floating point `8.0`, expected usize"),
    ("reversed offsets", edit_header(lambda h: h["1.bias"].update(data_offsets=[32, 0])),
     LIBRARY + "invalid offset for tensor `1.bias`"),
    ("shape disagrees with offsets", edit_header(lambda h: h["1.weight"].update(shape=[8, 13])),
     r"1.weight: expected float32 \(8, 12\), got float32 \(8, 13\)"),
    ("offsets disagree with shape", edit_header(short_range), LIBRARY + "invalid shape, data type, or offset"),
    ("overlapping tensors", edit_header(overlap), LIBRARY + "invalid offset for tensor"),
    ("flipped bit in the last tensor", flip(lambda raw: len(raw) - 5, 3), "SHA-256 digest"),
    ("flipped bit in the first tensor", flip(data_start, 7), "SHA-256 digest"),
    ("flipped bit in the digest", flip(digest_char, 1), "SHA-256 digest"),
    ("renamed tensor", lambda raw, arch: raw.replace(b'"1.weight"', b'"1.weighs"', 1), "unexpected tensors: 1.weighs"),
    ("no digest", without_digest, "no sha256 digest"),
    ("float64 weights", with_tensors(set_item("1.weight", np.zeros((8, 12)))),
     r"1.weight: expected float32 \(8, 12\), got float64 \(8, 12\)"),
    ("int64 where float32", with_tensors(set_item("1.bias", np.zeros(8, np.int64))), "1.bias: expected float32"),
    ("transposed weight", with_tensors(set_item("1.weight", np.zeros((12, 8), np.float32))),
     r"1.weight: expected float32 \(8, 12\), got float32 \(12, 8\)"),
    ("missing tensor", with_tensors(lambda s: s.pop("5.bias")), "missing tensors: 5.bias"),
    ("extra tensor", with_tensors(set_item("7.weight", np.zeros(2, np.float32))), "unexpected tensors: 7.weight"),
    ("NaN weights", with_tensors(lambda s: s["1.weight"].__setitem__((0, 0), np.nan)), "NaN or infinite weights in "
     "1.weight"),
    ("infinite running variance", with_tensors(lambda s: s["2.running_var"].fill(np.inf)),
     "NaN or infinite weights in 2.running_var"),
    ("weights of another architecture file", with_tensors(lambda s: None, {"architecture_sha256": "0" * 64}),
     "was not saved together with model.json"),
]

ARCH_CASES = [
    ("empty", model_json(text=b""), "not valid JSON"),
    ("not JSON", model_json(text=b"{not json"), "not valid JSON"),
    ("not UTF-8", model_json(text=b"\xff\xfe\xfa"), "not valid JSON"),
    ("over 1 MiB", model_json(text=b"{" + b" " * 2**20 + b"}"), "larger than 1,048,576 bytes"),
    ("nested 200,000 deep", model_json(text=b"[" * 200_000 + b"]" * 200_000), "nested too deeply"),
    ("modules nested 100 deep", model_json(nested(100)), "nested more than 64 deep"),
    ("a 5000-digit number", model_json(text=b'{"format": "pynn.model", "version": ' + b"9" * 5000 + b"}"),
     "not valid JSON"),
    ("NaN argument", model_json(text=b'{"format": "pynn.model", "version": 2, "model": {"type": "Dropout", '
                                     b'"kwargs": {"p": NaN}}}'), "NaN is not a JSON number"),
    ("duplicate key", model_json(text=b'{"format": "pynn.model", "format": "pynn.model"}'), "duplicate key"),
    ("a list", model_json(text=b"[]"), "not a pynn.model file"),
    ("another format", model_json(lambda d: {**d, "format": "keras"}), "not a pynn.model file"),
    ("another version", model_json(lambda d: {**d, "version": 99}), "has version 99; this pynn reads 2"),
    ("extra top-level key", model_json(lambda d: {**d, "weights": [1, 2]}), "expected the keys format, version"),
    ("unknown module type", model_json(child({"type": "os.system", "kwargs": {"command": "true"}})),
     "unknown module type 'os.system'"),
    ("string size", model_json(child({"type": "Linear", "kwargs": {"in_features": "12", "out_features": 8}})),
     "in_features='12' does not match"),
    ("bool size", model_json(child({"type": "Linear", "kwargs": {"in_features": True, "out_features": 8}})),
     "in_features=True does not match"),
    ("Linear(10**12, 10)", model_json(child({"type": "Linear", "kwargs": {"in_features": 10**12, "out_features": 10}})),
     "over the limit of 268,435,456 per module"),
    ("five 2**28-element layers", model_json(many_big_layers), "per model"),
    ("kernel of three sizes", model_json(child({"type": "Conv2d", "kwargs": {
        "in_channels": 1, "out_channels": 2, "kernel_size": [3, 3, 3]}})), "kernel_size=\\[3, 3, 3\\] does not"),
    ("module as an argument", model_json(child({"type": "Residual", "kwargs": {"projection": {"type": "ReLU"}},
                                                "children": [{"type": "ReLU"}]})), "projection=.* does not match"),
    ("unknown argument", model_json(child({"type": "Linear", "kwargs": {"in_features": 12, "out_features": 8,
                                                                        "bais": False}})), "unknown argument 'bais'"),
    ("missing argument", model_json(child({"type": "Linear", "kwargs": {"in_features": 12}})), "missing argument"),
    ("children on a layer", model_json(child({"type": "ReLU", "children": []})), "takes no children"),
    ("extra config key", model_json(child({"type": "ReLU", "code": "print(1)"})), "unknown config keys"),
    ("out-of-range value", model_json(child({"type": "Dropout", "kwargs": {"p": 2.0}}, 4)), r"model.4 \(Dropout\)"),
    ("another architecture", model_json(child({"type": "Linear", "kwargs": {"in_features": 12, "out_features": 9}})),
     r"1.weight: expected float32 \(9, 12\)"),
    ("edited hyper-parameter", model_json(child({"type": "Dropout", "kwargs": {"p": 0.3}}, 4)),
     "was not saved together with model.json"),
]


def _expect_refusal(directory, pattern, *names):
    with pytest.raises(ValueError, match=pattern) as info:
        pynn.load(directory)
    assert str(info.value).startswith(tuple(str(directory / name) + ": " for name in names)), "names the file"


@pytest.mark.parametrize("case", WEIGHT_CASES, ids=[c[0] for c in WEIGHT_CASES])
def test_hostile_weights_are_refused(saved, tmp_path, case):
    _, arch, raw = saved
    _, make, pattern = case
    (tmp_path / ARCHITECTURE).write_bytes(arch)
    (tmp_path / WEIGHTS).write_bytes(make(raw, arch))
    _expect_refusal(tmp_path, pattern, WEIGHTS)


@pytest.mark.parametrize("case", ARCH_CASES, ids=[c[0] for c in ARCH_CASES])
def test_hostile_architectures_are_refused_before_building(saved, tmp_path, case):
    _, arch, raw = saved
    _, make, pattern = case
    (tmp_path / ARCHITECTURE).write_bytes(make(arch))
    (tmp_path / WEIGHTS).write_bytes(raw)
    start = time.perf_counter()
    _expect_refusal(tmp_path, pattern, ARCHITECTURE, WEIGHTS)
    assert time.perf_counter() - start < 5  # refused before allocating anything large


@pytest.mark.parametrize("name", [WEIGHTS, ARCHITECTURE])
def test_missing_files_raise_file_not_found_naming_them(saved, tmp_path, name):
    _, arch, raw = saved
    (tmp_path / ARCHITECTURE).write_bytes(arch)
    (tmp_path / WEIGHTS).write_bytes(raw)
    (tmp_path / name).unlink()
    with pytest.raises(FileNotFoundError, match=name):
        pynn.load(tmp_path)


def test_the_saved_files_load_and_are_read_by_the_safetensors_library(saved):
    directory, _, _ = saved
    model = _model()
    loaded = pynn.load(directory)
    theirs = safetensors.numpy.load_file(str(directory / WEIGHTS))
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[k], v)
        np.testing.assert_array_equal(theirs[k], v)
        assert theirs[k].dtype == v.dtype


def test_saving_twice_gives_the_same_tensors_and_metadata(saved, tmp_path):
    directory, arch, _ = saved
    pynn.save(_model(), tmp_path)
    assert (tmp_path / ARCHITECTURE).read_bytes() == arch
    assert saved_weights(directory / WEIGHTS) == saved_weights(tmp_path / WEIGHTS)


def test_save_refuses_non_finite_weights_and_writes_nothing(tmp_path):
    model = _model()
    model[5].bias.data[1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite values in 5.bias"):
        pynn.save(model, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_write_atomic_replaces_whole_files_and_cleans_up(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    write_atomic(path, b"old")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]

    def failing_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, b"new contents")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]


def test_write_atomic_fsyncs_the_file_then_the_directory(tmp_path, monkeypatch):
    calls = []
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(os.path.isdir(f"/proc/self/fd/{fd}")) or fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b, replace=os.replace: calls.append("replace") or replace(a, b))
    write_atomic(tmp_path / "f.bin", b"x")
    assert calls == [False, "replace", True]


def test_state_files_round_trip_nested_values_and_arrays(tmp_path):
    state = {"a": [1, 2.5, None, True, "s"], "b": {"w": np.arange(6, dtype=np.float32).reshape(2, 3),
                                                  "n": np.array(3, np.int64)}, "c": [np.zeros(2)]}
    serialization.save_state(tmp_path / "s", state, "test.state")
    back = serialization.load_state(tmp_path / "s", "test.state")
    assert back["a"] == [1, 2.5, None, True, "s"]
    np.testing.assert_array_equal(back["b"]["w"], state["b"]["w"])
    assert back["b"]["n"].shape == () and back["c"][0].dtype == np.float64
    with pytest.raises(ValueError, match="not a other.state file"):
        serialization.load_state(tmp_path / "s", "other.state")
    with pytest.raises(TypeError, match="'x' is a set"):
        serialization.save_state(tmp_path / "t", {"x": {1}}, "test.state")
    with pytest.raises(ValueError, match="Out of range float values"):
        serialization.save_state(tmp_path / "t", {"x": float("nan")}, "test.state")


def test_state_files_refuse_dangling_or_unused_tensor_references(tmp_path):
    def forge(doc, tensors):
        write_tensors(tmp_path / "s", tensors, {"format": "test.state", "state": json.dumps(doc)})

    forge({"w": {"__tensor__": "nope"}}, {"w": np.zeros(2)})
    with pytest.raises(ValueError, match="bad tensor reference"):
        serialization.load_state(tmp_path / "s", "test.state")
    forge({"w": 1}, {"w": np.zeros(2)})
    with pytest.raises(ValueError, match="not referenced by the state: w"):
        serialization.load_state(tmp_path / "s", "test.state")
    forge({"a": {"__tensor__": "w"}, "b": {"__tensor__": "w"}}, {"w": np.zeros(2)})
    with pytest.raises(ValueError, match="bad tensor reference"):
        serialization.load_state(tmp_path / "s", "test.state")


# State files have no expected names or shapes: the library alone checks their layout.
STATE_CASES = [
    ("shape disagrees with offsets", {"dtype": "F64", "shape": [3], "data_offsets": [0, 16]},
     "invalid shape, data type, or offset"),
    ("offsets past the data", {"dtype": "F64", "shape": [2], "data_offsets": [8, 24]}, "invalid offset"),
    ("70 dimensions", {"dtype": "F64", "shape": [1] * 68 + [2, 1], "data_offsets": [0, 16]},
     "maximum supported dimension"),
    ("2**64 elements", {"dtype": "F64", "shape": [2, 2**32, 2**32], "data_offsets": [0, 16]},
     "overflow computing buffer size"),
    ("unsupported dtype BF16", {"dtype": "BF16", "shape": [8], "data_offsets": [0, 16]}, "has dtype 'BF16'"),
]


@pytest.mark.parametrize("case", STATE_CASES, ids=[c[0] for c in STATE_CASES])
def test_hostile_state_files_are_refused(tmp_path, case):
    _, entry, pattern = case
    path = tmp_path / "s"
    write_tensors(path, {"w": np.zeros(2)}, {"format": "test.state", "state": '{"w": {"__tensor__": "w"}}'})
    header, data = split(path.read_bytes())
    header["w"] = entry
    path.write_bytes(join(header, data))
    with pytest.raises(ValueError, match=pattern) as info:
        serialization.load_state(path, "test.state")
    assert str(info.value).startswith(f"{path}: "), "names the file"


def test_from_config_refuses_absurd_sizes_before_allocating(monkeypatch):
    with pytest.raises(ValueError, match=r"model \(Linear\).*1e\+13 elements"):
        pynn.from_config({"type": "Linear", "kwargs": {"in_features": 10**12, "out_features": 10}})
    monkeypatch.setattr(pynn.module, "MAX_MODULES", 3)
    with pytest.raises(ValueError, match="more than 3 modules"):
        pynn.from_config({"type": "Sequential", "children": [{"type": "ReLU"}] * 3})
