"""Built-in extractors, one module per model family; each registers itself on import.

An extractor mirrors its transformer's diffusers forward (for the diffusers versions pyproject.toml
allows), split at the point TeaCache needs: everything before the blocks, the modulated input of
the first block, the blocks, and the output head.
"""

from . import flux  # noqa: F401
