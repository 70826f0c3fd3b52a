"""Parameters, the Module base class, Sequential, and rebuilding modules from their config.

Backpropagation is explicit, as in classic NumPy networks (and unlike PyTorch's autograd):
``forward(x)`` computes the output and keeps what the backward pass needs; ``backward(g)``
takes the gradient of the loss with respect to that output and returns the gradient with
respect to the input, ADDING the gradients of the module's parameters into each
``Parameter.grad`` in place (so a flat optimizer buffer behind ``grad`` stays valid).

Names, keys and semantics follow ``torch.nn.Module``: ``state_dict()`` keys are dotted paths
such as ``"0.weight"``, so a PyTorch ``state_dict`` of the same architecture loads directly.
``config()`` describes a module as JSON-able data (its type name, constructor kwargs and, for
containers, its children); ``from_config`` rebuilds it from the registry of module types
filled by ``register``.
"""
from __future__ import annotations

import inspect
import math
import types
import typing
from collections import OrderedDict, namedtuple

import numpy as np

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Parameter:
    """A trainable array: ``data`` and its gradient ``grad`` (same shape and dtype, zeros at first).

    ``data`` is copied into a new C-contiguous array of ``dtype`` (float32 by default; float64
    is meant for gradient checks on the numpy backend). An optimizer may rebind ``data`` and
    ``grad`` to views of its flat buffers; code that updates them must write in place.
    """

    def __init__(self, data, dtype=np.float32):
        self.data = np.array(data, dtype=dtype, order="C")
        self.grad = np.zeros_like(self.data)

    @property
    def shape(self) -> tuple:
        return self.data.shape

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


_REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: make a Module subclass rebuildable by name with ``from_config``.

    Raises ValueError when another class already holds the name (re-registering the same
    class, e.g. after re-running a notebook cell, is allowed).
    """
    old = _REGISTRY.get(cls.__name__)
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"module type name {cls.__name__!r} is already registered by {old.__module__}")
    _REGISTRY[cls.__name__] = cls
    return cls


class Module:
    """Base class of layers and containers.

    Subclasses call ``super().__init__()`` first, then assign Parameters and sub-Modules as
    attributes (registered in assignment order) and arrays that are state but not trained with
    ``register_buffer``. They implement ``forward`` and ``backward``, and list the attribute
    names that are their constructor kwargs in ``_hyper`` so ``config()`` can describe them.
    """

    _hyper: tuple[str, ...] = ()

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        self.training = True

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"call Module.__init__() before assigning {name!r}")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        elif name in self._buffers:
            self._buffers[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, array) -> None:
        """Add an array that belongs in ``state_dict`` but is not trained (running statistics)."""
        self._buffers[name] = None
        setattr(self, name, np.array(array, order="C"))

    # --- computation -------------------------------------------------------------------------
    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, grad_output, input_grad: bool = True):
        """Accumulate the parameters' gradients into ``Parameter.grad`` and return the gradient
        with respect to the forward's input. With ``input_grad=False`` (the input is data) the
        input gradient is neither computed nor returned (None): modules with parameters take
        this argument, and ``Sequential`` passes it to its first one."""
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def _saved(self, name: str):
        """What ``forward`` kept for ``backward``; RuntimeError when forward has not run."""
        value = self.__dict__.get(name)
        if value is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return value

    # --- traversal ---------------------------------------------------------------------------
    def named_modules(self, prefix: str = ""):
        """Yield ``(dotted name, module)`` for this module and every descendant, each once."""
        seen = set()
        stack = [(prefix, self)]
        while stack:
            name, mod = stack.pop()
            if id(mod) in seen:
                continue
            seen.add(id(mod))
            yield name, mod
            kids = [(f"{name}.{k}" if name else k, m) for k, m in mod._modules.items()]
            stack.extend(reversed(kids))

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_children(self):
        return iter(self._modules.items())

    def children(self):
        return iter(self._modules.values())

    def _named(self, registry: str):
        seen = set()
        for prefix, mod in self.named_modules():
            for name, value in getattr(mod, registry).items():
                if value is not None and id(value) not in seen:
                    seen.add(id(value))
                    yield (f"{prefix}.{name}" if prefix else name), value

    def named_parameters(self):
        """Yield ``(dotted name, Parameter)``, PyTorch's order, shared parameters once."""
        return self._named("_parameters")

    def parameters(self):
        return (p for _, p in self.named_parameters())

    def named_buffers(self):
        return self._named("_buffers")

    def buffers(self):
        return (b for _, b in self.named_buffers())

    # --- modes and gradients -----------------------------------------------------------------
    def train(self, mode: bool = True):
        """Set training mode (Dropout active) on this module and its descendants; returns self."""
        for m in self.modules():
            m.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self) -> None:
        """Set every parameter's gradient to zero, in place."""
        for p in self.parameters():
            p.grad.fill(0)

    def to(self, dtype):
        """Convert parameters (zeroing their gradients) and floating-point buffers to ``dtype``;
        integer buffers (``num_batches_tracked``) keep their dtype, as in PyTorch. Returns self.

        Rebinds the arrays: call it before building an optimizer over the parameters.
        """
        for p in self.parameters():
            p.data = np.ascontiguousarray(p.data, dtype=dtype)
            p.grad = np.zeros_like(p.data)
        for mod in self.modules():
            for name, b in list(mod._buffers.items()):
                if b.dtype.kind == "f":
                    setattr(mod, name, np.array(b, dtype=dtype, order="C"))
        return self

    # --- state -------------------------------------------------------------------------------
    def _named_arrays(self):
        yield from ((n, p.data) for n, p in self.named_parameters())
        yield from self.named_buffers()

    def state_dict(self) -> OrderedDict:
        """Copies of every parameter and buffer array, keyed by dotted name (``"0.weight"``)."""
        return OrderedDict((name, a.copy()) for name, a in self._named_arrays())

    def load_state_dict(self, state_dict, strict: bool = True) -> IncompatibleKeys:
        """Copy arrays from ``state_dict`` INTO the existing parameters and buffers.

        Values may be anything ``numpy.asarray`` accepts (PyTorch CPU tensors included) and are
        cast to each array's dtype. Arrays are written with ``a[...] = value``, never rebound,
        so optimizer buffers stay valid. Nothing is written unless every check passes.

        Raises ValueError naming the missing and unexpected keys (with ``strict``) and every key
        whose shape differs (always); TypeError for a non-numeric value. Returns the
        ``(missing_keys, unexpected_keys)`` named tuple.
        """
        own = OrderedDict(self._named_arrays())
        values = {k: np.asarray(v) for k, v in state_dict.items()}
        missing = [k for k in own if k not in values]
        unexpected = [k for k in values if k not in own]
        for k, v in values.items():
            if v.dtype.kind not in "biuf":
                raise TypeError(f"state_dict[{k!r}] must be numeric, got dtype {v.dtype}")
        problems = [f"{k}: expected shape {own[k].shape}, got {values[k].shape}"
                    for k in own if k in values and own[k].shape != values[k].shape]
        if strict:
            problems += [f"missing keys: {', '.join(missing)}"] if missing else []
            problems += [f"unexpected keys: {', '.join(unexpected)}"] if unexpected else []
        if problems:
            raise ValueError(f"cannot load state_dict into {type(self).__name__}: " + "; ".join(problems))
        for k, a in own.items():
            if k in values:
                a[...] = values[k]
        return IncompatibleKeys(missing, unexpected)

    def get_extra_state(self) -> dict:
        """Run-time state that is neither a parameter nor a buffer (``torch.nn.Module``'s name):
        the module's public int attributes that are not constructor arguments, such as Dropout's
        seed and call count. Training checkpoints save it; a module with other state overrides
        this and ``set_extra_state``."""
        return {k: v for k, v in vars(self).items()
                if type(v) is int and not k.startswith("_") and k not in self._hyper}

    def set_extra_state(self, state) -> None:
        """Restore ``get_extra_state()`` output. Raises ValueError naming the module type when the
        names differ from this module's or a value is not an int in [-2**63, 2**64)."""
        own = self.get_extra_state()
        if not isinstance(state, dict) or set(state) != set(own):
            raise ValueError(f"{type(self).__name__} extra state must have the keys {sorted(own)}, got {state!r:.200}")
        for k, v in state.items():
            if type(v) is not int or not -2**63 <= v < 2**64:
                raise ValueError(f"{type(self).__name__} extra state {k!r} must be an int, got {v!r:.100}")
        for k, v in state.items():
            setattr(self, k, v)

    # --- description -------------------------------------------------------------------------
    def _kwargs(self) -> dict:
        return {k: getattr(self, k) for k in self._hyper}

    def config(self) -> dict:
        """JSON-able description: ``{"type": name, "kwargs": {...}}`` plus ``"children"`` for containers."""
        return {"type": type(self).__name__, "kwargs": self._kwargs()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._kwargs().items())
        kids = "".join(f"\n  ({k}): " + repr(m).replace("\n", "\n  ") for k, m in self._modules.items())
        return f"{type(self).__name__}({args}{kids}{chr(10) if kids else ''})"


@register
class Sequential(Module):
    """Modules applied in order; children are named ``"0"``, ``"1"``, ... as in PyTorch.

    Supports ``len``, iteration, integer indexing and slicing (a new Sequential sharing the
    modules). Children that form a dense stack, [Flatten] Linear [ReLU] [Dropout] ... Linear
    (``pynn.layers.dense_stack``), run as one ``kernels.mlp`` call forward and one
    ``kernels.mlp_backward`` call backward, with the layers' results bit for bit. Otherwise the
    children run in order, except that a ReLU followed by a MaxPool2d runs after it
    (``pynn.conv.pool_before_relu``: the same values, with ReLU on a quarter of the cells), and
    ``backward`` runs their backward passes in reverse; with
    ``input_grad=False`` (``fit`` passes it: the input is data) it stops at the first child with
    parameters, which computes only their gradients, and returns None.
    """

    def __init__(self, *modules: Module):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> "Sequential":
        if not isinstance(module, Module):
            raise TypeError(f"Sequential takes Modules, got {type(module).__name__}")
        setattr(self, str(len(self._modules)), module)
        return self

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        mods = list(self._modules.values())
        return Sequential(*mods[index]) if isinstance(index, slice) else mods[index]

    def forward(self, x):
        from pynn.conv import pool_before_relu  # both build on this module
        from pynn.layers import dense_stack

        # The plan depends on the children and their modes only: rebuilt when one changes.
        key = tuple((id(m), m.training) for m in self._modules.values())
        if self.__dict__.get("_stack_key") != key:  # state, not children
            self.__dict__.update(_stack_key=key, _plan=dense_stack(self), _order=pool_before_relu(list(self)))
        if self._plan is not None:
            return self._plan.forward(x)
        for m in self._order:
            x = m(x)
        return x

    def backward(self, grad_output, input_grad: bool = True):
        plan = self.__dict__.get("_plan")
        if plan is not None:
            return plan.backward(grad_output, input_grad)
        layers = self.__dict__.get("_order") or list(self)
        first = 0
        if not input_grad:  # layers before the first with parameters would only carry dx: skip them
            first = next((i for i, m in enumerate(layers) if next(m.parameters(), None) is not None), len(layers))
        for i in range(len(layers) - 1, first - 1, -1):
            grad_output = layers[i].backward(grad_output) if i > first or input_grad else \
                layers[i].backward(grad_output, input_grad=False)
        return grad_output if input_grad else None

    def config(self) -> dict:
        return {**super().config(), "children": [m.config() for m in self]}


_JSON_TYPES = {int: (int,), float: (int, float), bool: (bool,), str: (str,), type(None): (type(None),)}

# Bounds on configs read from files, so that a hostile one cannot exhaust memory or the stack.
MAX_DEPTH = 64
MAX_MODULES = 100_000
# Every constructor's largest array has at most as many elements as the product of its positive
# integer arguments (in x out for Linear, out x in/groups x kh x kw for Conv2d, ...), so bounding
# that product per module and its sum over the model bounds what building allocates.
MAX_MODULE_ELEMENTS = 2**28
MAX_MODEL_ELEMENTS = 2**30


def _accepts(annotation, value) -> bool:
    """Whether a JSON value fits a constructor annotation (unannotated parameters take anything).

    ``tuple[...]`` takes a list or tuple of fitting items; types JSON cannot hold (Module)
    take nothing: modules are given as children.
    """
    if annotation is inspect.Parameter.empty:
        return True
    options = annotation.__args__ if isinstance(annotation, types.UnionType) else (annotation,)
    for t in options:
        if typing.get_origin(t) is tuple:
            items = typing.get_args(t)
            if items[-1:] == (Ellipsis,):
                items = items[:1] * len(value) if isinstance(value, (list, tuple)) else ()
            if isinstance(value, (list, tuple)) and len(value) == len(items) \
                    and all(_accepts(i, v) for i, v in zip(items, value)):
                return True
            continue
        allowed = _JSON_TYPES.get(t)
        if allowed is not None and isinstance(value, allowed) and (t is bool or not isinstance(value, bool)):
            return True
    return False


def _elements(value) -> int:
    """The product of the positive ints in a kwarg value (nested in lists), for the size bound."""
    if isinstance(value, bool):
        return 1
    if isinstance(value, int):
        return max(value, 1)
    if isinstance(value, (list, tuple)):
        return math.prod(_elements(v) for v in value)
    return 1


def validate_config(cfg, path: str = "model") -> None:
    """Check a whole config tree against the registry without building anything.

    Checks each node's keys, that its type is registered, that its kwargs name constructor
    parameters with values of the annotated types, that required ones are present, that
    children appear only on containers, and the size bounds: at most ``MAX_DEPTH`` levels and
    ``MAX_MODULES`` modules, and integer arguments whose product is at most
    ``MAX_MODULE_ELEMENTS`` per module and ``MAX_MODEL_ELEMENTS`` over the model (this bounds the
    arrays building allocates). Raises ValueError naming the node's path.
    """
    budget = {"modules": MAX_MODULES, "elements": MAX_MODEL_ELEMENTS}
    _validate(cfg, path, 1, budget)


def _validate(cfg, path: str, depth: int, budget: dict) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"{path}: modules nested more than {MAX_DEPTH} deep")
    budget["modules"] -= 1
    if budget["modules"] < 0:
        raise ValueError(f"{path}: more than {MAX_MODULES} modules")
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: a module config must be an object, got {type(cfg).__name__}")
    extra = set(cfg) - {"type", "kwargs", "children"}
    if extra:
        raise ValueError(f"{path}: unknown config keys {sorted(extra)}")
    cls = _REGISTRY.get(cfg.get("type")) if isinstance(cfg.get("type"), str) else None
    if cls is None:
        raise ValueError(f"{path}: unknown module type {cfg.get('type')!r:.100}; known: {', '.join(sorted(_REGISTRY))}")
    kwargs = cfg.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise ValueError(f"{path} ({cls.__name__}): kwargs must be an object, got {type(kwargs).__name__}")
    params = inspect.signature(cls, eval_str=True).parameters
    named = {k: p for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    for k, v in kwargs.items():
        if k not in named:
            raise ValueError(f"{path} ({cls.__name__}): unknown argument {k!r:.100}; expected {sorted(named)}")
        if not _accepts(named[k].annotation, v):
            raise ValueError(f"{path} ({cls.__name__}): {k}={v!r:.100} does not match its type {named[k].annotation}")
    required = [k for k, p in named.items() if p.default is p.empty and k not in kwargs]
    if required:
        raise ValueError(f"{path} ({cls.__name__}): missing argument(s) {required}")
    elements = _elements(list(kwargs.values()))
    budget["elements"] -= elements
    if elements > MAX_MODULE_ELEMENTS or budget["elements"] < 0:
        raise ValueError(f"{path} ({cls.__name__}): arguments {kwargs!r:.200} describe arrays of up to {elements:.3g} "
                         f"elements, over the limit of {MAX_MODULE_ELEMENTS:,} per module and {MAX_MODEL_ELEMENTS:,} "
                         "per model (pynn.module.MAX_MODULE_ELEMENTS, MAX_MODEL_ELEMENTS)")
    children = cfg.get("children")
    if children is not None:
        if not any(p.kind == p.VAR_POSITIONAL for p in params.values()):
            raise ValueError(f"{path} ({cls.__name__}): this module type takes no children")
        if not isinstance(children, list):
            raise ValueError(f"{path} ({cls.__name__}): children must be a list")
        for i, child in enumerate(children):
            _validate(child, f"{path}.{i}", depth + 1, budget)


def _build(cfg, path):
    children = [_build(c, f"{path}.{i}") for i, c in enumerate(cfg.get("children", ()))]
    try:
        return _REGISTRY[cfg["type"]](*children, **cfg.get("kwargs", {}))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path} ({cfg['type']}): {exc}") from exc


def from_config(cfg) -> Module:
    """Build a module from ``config()`` output: the whole tree is validated first
    (``validate_config``), so a bad node raises ValueError before any array is allocated.
    Values out of a constructor's range raise ValueError (naming the node) while building."""
    validate_config(cfg)
    return _build(cfg, "model")
