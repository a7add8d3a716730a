"""Regional torch.compile: compile each transformer block, never the transformer's forward.

The TeaCache hook replaces the transformer's forward and its extractor calls the blocks, so with only
the blocks compiled the decision (rel_l1's `.item()`, the accumulator, the branch states) stays in eager
Python by construction: no graph break, and a cached call runs no compiled code at all. Compiling sets
each block's compiled `__call__` (nn.Module.compile), which the hook does not touch, so it works whether
it happens before or after apply_teacache.
"""

from __future__ import annotations

from typing import Any

import torch
import torch._dynamo
from diffusers.utils.torch_utils import unwrap_module

from .apply import denoisers
from .config import TeaCacheError
from .diffusers_internals import repeated_block_names


def compile_transformer_blocks(pipe_or_transformer: Any, **compile_kwargs: Any) -> int:
    """torch.compile every block of each denoiser (a pipeline's transformer(s), or the module itself).

    A diffusers model that declares `_repeated_blocks` goes through its `compile_repeated_blocks`; any
    other transformer gets each module of its direct-child nn.ModuleList block lists compiled.
    `compile_kwargs` go to torch.compile (backend, mode, dynamic, fullgraph, options). Returns the number
    of blocks compiled.
    """
    # By default dynamo ignores forward hooks added to a module after it was compiled; teacli's call
    # counter (bench, --compare-baseline) adds some inside the blocks, so hooks must count as guards.
    torch._dynamo.config.skip_nnmodule_hook_guards = False
    compiled = 0
    for name, module in denoisers(pipe_or_transformer).items():
        model = unwrap_module(module)
        repeated = repeated_block_names(model)
        blocks = [m for m in model.modules() if type(m).__name__ in repeated]
        if blocks and hasattr(model, "compile_repeated_blocks"):
            model.compile_repeated_blocks(**compile_kwargs)
        else:
            blocks = block_list_modules(model)
            if not blocks:
                raise TeaCacheError(
                    f"{name} ({type(model).__name__}) has no list of transformer blocks to compile; "
                    "compile it yourself with torch.compile or run without --compile"
                )
            for block in blocks:
                block.compile(**compile_kwargs)
        compiled += len(blocks)
    return compiled


def block_list_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules of the transformer's direct-child nn.ModuleLists that hold parameters (its blocks)."""
    return [
        block
        for child in model.children()
        if isinstance(child, torch.nn.ModuleList)
        for block in child
        if any(True for _ in block.parameters())
    ]


def compiled_blocks(pipe_or_transformer: Any) -> list[torch.nn.Module]:
    """The submodules of each denoiser that nn.Module.compile compiled (for checks and undo)."""
    return [
        m
        for module in denoisers(pipe_or_transformer).values()
        for m in unwrap_module(module).modules()
        if getattr(m, "_compiled_call_impl", None) is not None
    ]


def uncompile_transformer_blocks(pipe_or_transformer: Any) -> int:
    """Undo compile_transformer_blocks: every block runs eagerly again. Returns how many were reset."""
    blocks = compiled_blocks(pipe_or_transformer)
    for block in blocks:
        block._compiled_call_impl = None
    return len(blocks)
