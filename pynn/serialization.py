"""Saving and loading models without pickle: weights as safetensors, architecture as JSON.

``save(model, directory)`` writes ``model.safetensors`` (the ``state_dict``, via
``safetensors.numpy``) and ``model.json`` (``{"format": "pynn.model", "version": 1,
"model": model.config()}``). ``load(directory)`` validates the whole JSON against the registry
of module types (``pynn.module.validate_config``) before building anything, builds the model,
then loads the weights with ``strict=True``. Loading never executes code from the files.
"""
from __future__ import annotations

import json
from pathlib import Path

from safetensors.numpy import load_file, save_file

from pynn.module import Module, from_config, validate_config

FORMAT = "pynn.model"
VERSION = 1
WEIGHTS = "model.safetensors"
ARCHITECTURE = "model.json"


def save(model: Module, directory) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``directory`` (created if needed).

    Returns the directory as a Path. Raises TypeError when ``model`` is not a Module.
    """
    if not isinstance(model, Module):
        raise TypeError(f"save expects a Module, got {type(model).__name__}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    header = {"format": FORMAT, "version": VERSION, "model": model.config()}
    (directory / ARCHITECTURE).write_text(json.dumps(header, indent=2) + "\n")
    save_file(dict(model.state_dict()), str(directory / WEIGHTS), metadata={"format": FORMAT})
    return directory


def load(directory) -> Module:
    """Rebuild the model saved in ``directory``, in training mode, float32.

    Raises FileNotFoundError for a missing file and ValueError for malformed JSON, another
    format or version, an unknown module type, bad constructor arguments (all checked before
    anything is built), or weights that do not match the architecture.
    """
    directory = Path(directory)
    header = json.loads((directory / ARCHITECTURE).read_text())
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{directory / ARCHITECTURE} is not a {FORMAT} file")
    if header.get("version") != VERSION:
        raise ValueError(f"{directory / ARCHITECTURE} has version {header.get('version')!r}; this pynn reads {VERSION}")
    validate_config(header.get("model"))
    tensors = load_file(str(directory / WEIGHTS))
    model = from_config(header["model"])
    model.load_state_dict(tensors)
    return model
