"""The tracer-neutral record of one captured op, before costs and layers are attached.

Both `ir.capture_fx` and `ir.capture_export` produce a list of `RawOp`; `ir.build` turns it into
the Graph. torch.fx objects never leave those two modules.
"""

from __future__ import annotations

from dataclasses import dataclass

from ir.graph import TensorSpec


@dataclass(frozen=True)
class RawOp:
    """One op as a tracer saw it: a short name plus shapes, parameters and producers."""

    short_name: str  # e.g. "linear", "scaled_dot_product_attention", "Conv2d"
    target: str
    input_specs: tuple[TensorSpec, ...]
    input_producers: tuple[int | None, ...]  # index of the producing RawOp per input, None otherwise
    input_params: tuple[str | None, ...]  # parameter name per input when the input is a parameter
    outputs: tuple[TensorSpec, ...]
    module_path: str
    is_causal: bool = False
