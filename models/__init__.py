"""The GAN families. Importing this package imports every module in it, so each family file
registers itself (``@register_family``): a new family is one file here and one YAML in
``configs/``, nothing else to edit."""

import importlib
import pkgutil

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
