"""Built-in extractors, one module per model family; each registers itself on import.

An extractor mirrors its transformer's diffusers forward (for the diffusers versions pyproject.toml
allows), split at the point TeaCache needs: everything before the blocks, the modulated input of
the first block, the blocks, and the output head.

Every module in this package is imported, so adding a family is adding a file.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
