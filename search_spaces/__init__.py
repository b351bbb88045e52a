"""Named search spaces, one module each. `get(name)` returns a space; an unknown name lists the known ones."""

import importlib
import pkgutil

from core.config import did_you_mean
from search_spaces.space import SearchSpace, SpaceError, StudyDesign, design, resolve_trial

# Every module of this package that defines SPACE is a space (by name): adding a space is adding its file.
_MODULES = [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)]
_FOUND = [getattr(module, "SPACE", None) for module in _MODULES]
SPACES: dict[str, SearchSpace] = dict(sorted((s.name, s) for s in _FOUND if isinstance(s, SearchSpace)))


def get(name: str) -> SearchSpace:
    if name not in SPACES:
        raise SpaceError(f"unknown search space {name!r} ({did_you_mean([name], SPACES)}known: {', '.join(SPACES)})")
    return SPACES[name]


__all__ = ["SPACES", "SearchSpace", "SpaceError", "StudyDesign", "design", "get", "resolve_trial"]
