"""save/load: a round trip reproduces the model exactly; malformed files are refused with
ValueError before any layer is built."""
import json

import numpy as np
import pytest

import pynn


def _model():
    pynn.manual_seed(0)
    return pynn.Sequential(pynn.Flatten(), pynn.Linear(12, 8), pynn.GELU("tanh"), pynn.Dropout(0.2),
                           pynn.Linear(8, 6, bias=False), pynn.LeakyReLU(0.05), pynn.ELU(0.5),
                           pynn.Sequential(pynn.Linear(6, 4), pynn.SELU()), pynn.Tanh(), pynn.Linear(4, 3),
                           pynn.Softmax(-1))


def test_round_trip_gives_identical_outputs(tmp_path):
    model = _model().eval()
    pynn.save(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "model.safetensors"]
    loaded = pynn.load(tmp_path / "m").eval()
    assert loaded.config() == model.config()
    assert list(loaded.state_dict()) == list(model.state_dict())
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[k], v)
    x = np.random.default_rng(1).standard_normal((5, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x), model(x))


def _write(tmp_path, model_cfg, **header):
    """A saved model whose JSON architecture is replaced by ``model_cfg``."""
    pynn.save(_model(), tmp_path)
    doc = json.loads((tmp_path / "model.json").read_text())
    doc.update(header)
    doc["model"] = model_cfg
    (tmp_path / "model.json").write_text(json.dumps(doc))
    return tmp_path


@pynn.register
class Tripwire(pynn.Module):
    """A module that must never be built: the configs below put it before their bad node."""

    def __init__(self):
        raise AssertionError("a module was built before the whole config was validated")


TRIPWIRE = {"type": "Tripwire", "kwargs": {}}


@pytest.mark.parametrize("bad, message", [
    ({"type": "Conv9d", "kwargs": {}}, "unknown module type 'Conv9d'"),
    ({"type": "Linear", "kwargs": {"in_features": 4, "out_features": 3, "bais": True}}, "unknown argument 'bais'"),
    ({"type": "Linear", "kwargs": {"in_features": "4", "out_features": 3}}, "in_features='4'"),
    ({"type": "Linear", "kwargs": {"in_features": 4}}, "missing argument"),
    ({"type": "Dropout", "kwargs": {"p": True}}, "p=True"),
    ({"type": "ReLU", "kwargs": []}, "kwargs must be an object"),
    ({"type": "ReLU", "children": []}, "takes no children"),
    ({"type": "ReLU", "weights": 1}, "unknown config keys"),
    ("ReLU", "must be an object"),
])
def test_bad_architecture_is_refused_before_building(tmp_path, bad, message):
    directory = _write(tmp_path, {"type": "Sequential", "kwargs": {}, "children": [TRIPWIRE, bad]})
    with pytest.raises(ValueError, match=message) as info:
        pynn.load(directory)
    assert "model.1" in str(info.value)  # the path of the bad node
    with pytest.raises(ValueError, match=message):
        pynn.from_config({"type": "Sequential", "kwargs": {}, "children": [TRIPWIRE, bad]})


def test_out_of_range_values_raise_value_error_naming_the_layer():
    with pytest.raises(ValueError, match=r"model.0 \(Linear\).*in_features must be >= 1"):
        pynn.from_config({"type": "Sequential", "children": [{"type": "Linear", "kwargs": {"in_features": 0,
                                                                                         "out_features": 2}}]})


@pytest.mark.parametrize("header, message", [
    ({"format": "keras"}, "not a pynn.model file"),
    ({"version": 99}, "version 99"),
])
def test_wrong_format_or_version(tmp_path, header, message):
    directory = _write(tmp_path, _model().config(), **header)
    with pytest.raises(ValueError, match=message):
        pynn.load(directory)


def test_weights_that_do_not_fit_the_architecture(tmp_path):
    cfg = _model().config()
    cfg["children"][1]["kwargs"]["out_features"] = 9
    with pytest.raises(ValueError, match=r"1.weight: expected float32 \(9, 12\), got float32 \(8, 12\)"):
        pynn.load(_write(tmp_path, cfg))


def test_missing_files_and_bad_json(tmp_path):
    with pytest.raises(FileNotFoundError):
        pynn.load(tmp_path / "nowhere")
    pynn.save(_model(), tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ValueError):
        pynn.load(tmp_path)
    with pytest.raises(TypeError, match="Module"):
        pynn.save({"weight": np.zeros(2)}, tmp_path)
