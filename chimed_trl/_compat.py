"""Old module paths kept importable after a move: ``__getattr__ = forward(__name__, new_homes)`` in the old module
answers any name from the modules that now hold it (the names the old module defined keep working)."""

from __future__ import annotations

import importlib


def forward(old: str, homes: tuple[str, ...]):
    def __getattr__(name: str):
        if not name.startswith("__"):
            for home in homes:
                module = importlib.import_module(home)
                if hasattr(module, name):
                    return getattr(module, name)
        raise AttributeError(f"module {old!r} has no attribute {name!r} (it moved to one of {', '.join(homes)})")

    return __getattr__
