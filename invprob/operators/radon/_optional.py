"""Lazy imports of the optional projector packages, each with an install hint when it is missing."""

from __future__ import annotations

from types import ModuleType


def import_astra() -> ModuleType:
    """Import astra-toolbox, or raise ``ImportError`` saying how to install it."""
    try:
        import astra
    except ImportError as err:
        raise ImportError(
            "backend='astra' needs astra-toolbox: pip install 'invprob[astra]' "
            "(or pip install astra-toolbox / conda install -c astra-toolbox astra-toolbox)"
        ) from err
    return astra


def import_torch_radon() -> ModuleType:
    """Import torch-radon, or raise ``ImportError`` saying how to build it (CUDA only, not on PyPI)."""
    try:
        import torch_radon
    except ImportError as err:
        raise ImportError(
            "backend='torch-radon' needs the torch_radon package (CUDA only, not on PyPI): build it "
            "from https://github.com/matteo-ronchetti/torch-radon (git clone ... && make install), "
            "or use backend='matrix'"
        ) from err
    return torch_radon
