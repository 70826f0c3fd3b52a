"""The residual connection of ResNets: ``y = block(x) + shortcut(x)``.

Source: He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016,
equation (1) with the identity shortcut, and equation (2) with a projection ``W_s x`` when the
block changes the shape (option B of section 3.3: 1x1 convolutions).
"""
from __future__ import annotations

from pynn.module import Module, register


@register
class Residual(Module):
    """``block(x) + x``, or ``block(x) + projection(x)`` when a projection is given.

    Called as ``Residual(block)``, ``Residual(block, projection)`` or
    ``Residual(block, projection=projection)``; the children are named ``block`` and
    ``projection`` in ``state_dict``. Their config is stored as children (block, then
    projection), so ``from_config`` rebuilds them positionally, like ``Sequential``.

    x: any shape the block accepts; block(x) and projection(x) (or x itself) must have the
    same shape. ``backward(g)`` returns ``block.backward(g) + projection.backward(g)`` (or
    ``+ g``): the gradient reaches x along both paths.

    Raises TypeError for children that are not Modules or for a wrong number of them, and
    ValueError in forward when the two paths disagree in shape.
    """

    def __init__(self, *modules: Module, projection: Module | None = None):
        super().__init__()
        if projection is not None:
            modules = modules + (projection,)
        if not 1 <= len(modules) <= 2:
            raise TypeError(f"Residual takes a block and an optional projection, got {len(modules)} modules")
        for name, m in zip(("block", "projection"), modules):
            if not isinstance(m, Module):
                raise TypeError(f"Residual's {name} must be a Module, got {type(m).__name__}")
        self.block = modules[0]
        self.projection = modules[1] if len(modules) == 2 else None

    def forward(self, x):
        y = self.block(x)
        shortcut = x if self.projection is None else self.projection(x)
        if y.shape != shortcut.shape:
            path = "x" if self.projection is None else "projection(x)"
            raise ValueError(f"Residual: block(x) has shape {y.shape} but {path} has shape {shortcut.shape}; "
                             "give a projection that maps x to the block's output shape")
        self._ran = True
        return y + shortcut

    def backward(self, grad_output, input_grad: bool = True):
        self._saved("_ran")
        grad = self.block.backward(grad_output, input_grad=input_grad)
        shortcut = grad_output if self.projection is None else self.projection.backward(grad_output, input_grad=input_grad)
        return grad + shortcut if input_grad else None

    def config(self) -> dict:
        return {**super().config(), "children": [m.config() for m in self.children()]}
