"""Repeated-block discovery: find the lists of structurally identical blocks in a module tree.

Transformer decoders repeat one block 32 to 126 times. Capture traces one representative per
distinct block signature (so capture time does not grow with depth) and `ir.build` replicates its
ops for every other block with the same signature.

A block signature covers everything that changes a block's computation: module classes, parameter
and buffer shapes and dtypes, and primitive attributes (so a sliding-window layer differs from a
full-attention one). The layer's own index (`layer_idx`) is deliberately left out.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass

import torch

_IGNORED_ATTRS = {"layer_idx", "training", "layer_id", "idx", "block_idx"}
_PRIMITIVES = (int, float, str, bool)


def module_signature(module: torch.nn.Module) -> str:
    """A short stable hash of a module's structure (not its parameter values)."""
    parts = []
    for name, sub in module.named_modules():
        parts.append(f"m:{name}:{type(sub).__qualname__}")
        for key in sorted(vars(sub)):
            value = vars(sub)[key]
            if key.startswith("_") or key in _IGNORED_ATTRS or not isinstance(value, _PRIMITIVES):
                continue
            parts.append(f"a:{name}.{key}={value!r}")
        for pname, param in sub.named_parameters(recurse=False):
            parts.append(f"p:{name}.{pname}:{tuple(param.shape)}:{param.dtype}")
        for bname, buf in sub.named_buffers(recurse=False):
            parts.append(f"b:{name}.{bname}:{tuple(buf.shape)}:{buf.dtype}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BlockList:
    """A container (ModuleList or Sequential) whose children are the repeated blocks."""

    path: str
    signatures: tuple[str, ...]  # per child, in order

    def child_path(self, index: int) -> str:
        return f"{self.path}.{index}" if self.path else str(index)


def _is_block_container(module: torch.nn.Module) -> bool:
    """A ModuleList or Sequential of >= 2 blocks with parameters: all of one class, or (a ModuleList
    only) a few classes that repeat, as hybrid decoders interleave attention and Mamba layers."""
    if not isinstance(module, (torch.nn.ModuleList, torch.nn.Sequential)) or len(module) < 2:
        return False
    children = list(module)
    if not all(any(True for _ in c.parameters()) for c in children):
        return False
    classes = {type(c) for c in children}
    return len(classes) == 1 or (isinstance(module, torch.nn.ModuleList) and 2 * len(classes) <= len(children))


def find_block_lists(model: torch.nn.Module, shallow_below: int = 6) -> list[BlockList]:
    """The outermost block containers; a short container of containers is descended into once.

    ResNet keeps 4 stages, each a Sequential of bottlenecks: with fewer than `shallow_below`
    children the stages are descended into (one level only) so that the bottlenecks become the
    blocks.
    """
    found: list[BlockList] = []

    def visit(module: torch.nn.Module, path: str, may_descend: bool = True) -> None:
        if _is_block_container(module):
            inner = [
                (f"{path}.{i}.{sub_name}" if path else f"{i}.{sub_name}", sub)
                for i, child in enumerate(module)
                for sub_name, sub in child.named_children()
                if _is_block_container(sub)
            ]
            if may_descend and len(module) < shallow_below and len(inner) == len(module):
                for sub_path, sub in inner:
                    visit(sub, sub_path, may_descend=False)
                return
            found.append(BlockList(path, tuple(module_signature(c) for c in module)))
            return
        for name, child in module.named_children():
            visit(child, f"{path}.{name}" if path else name)

    visit(model, "")
    return found


@contextlib.contextmanager
def truncated_to_representatives(model: torch.nn.Module, lists: list[BlockList]):
    """Temporarily keep only the first block of each distinct signature in every block list.

    Yields a dict mapping the representative's path while truncated (``model.layers.1``) to its
    original path (``model.layers.7``). The original containers are restored on exit.
    """
    saved = []
    path_map: dict[str, str] = {}
    try:
        for block_list in lists:
            container = model.get_submodule(block_list.path)
            keep = sorted({sig: i for i, sig in reversed(list(enumerate(block_list.signatures)))}.values())
            children = list(container)
            replacement = type(container)(*[children[i] for i in keep]) if isinstance(
                container, torch.nn.Sequential) else torch.nn.ModuleList([children[i] for i in keep])
            parent_path, _, attr = block_list.path.rpartition(".")
            parent = model.get_submodule(parent_path) if parent_path else model
            saved.append((parent, attr, container))
            setattr(parent, attr, replacement)
            for new_index, old_index in enumerate(keep):
                path_map[block_list.child_path(new_index)] = block_list.child_path(old_index)
        yield path_map
    finally:
        for parent, attr, container in reversed(saved):
            setattr(parent, attr, container)
