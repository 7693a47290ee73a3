"""The attention backends a training model can be loaded with, checked when the config is read: a backend
whose package is not installed would otherwise fail every worker at model load, after the GPUs are taken.

    eager, sdpa, flex_attention   PyTorch itself (sdpa: its fused flash / memory-efficient kernels on GPUs)
    flash_attention_2 / _4        the flash-attn package (or `kernels`, which fetches a build from the hub)
    flash_attention_3             flash-attn 3's Hopper build (flash_attn_interface), or `kernels`
    <org>/<repo>                  a hub kernel, through the `kernels` package
"""
from __future__ import annotations

from importlib.util import find_spec
from typing import Annotated

from pydantic import AfterValidator

IN_TORCH = ("eager", "sdpa", "flex_attention")
NEEDS_PACKAGE = {"flash_attention_2": ("flash_attn", "flash-attn"), "flash_attention_4": ("flash_attn", "flash-attn"),
                 "flash_attention_3": ("flash_attn_interface", "flash-attn 3 (its Hopper build)")}


def check_attention_backend(name: str | None) -> str | None:
    """`name` if transformers can load a model with it on this installation, else a ValueError saying why."""
    if name is None or name in IN_TORCH or name.startswith("paged|"):
        return name
    kernels = find_spec("kernels") is not None
    if name in NEEDS_PACKAGE:
        module, package = NEEDS_PACKAGE[name]
        if find_spec(module) is None and not kernels:
            raise ValueError(f"attn_implementation {name!r} needs the {package} package (or `kernels`), and neither "
                             f"is installed; use 'sdpa' (PyTorch's fused attention) or install it")
        return name
    if "/" in name:
        if not kernels:
            raise ValueError(f"attn_implementation {name!r} is a hub kernel: it needs the `kernels` package, which "
                             f"is not installed; use 'sdpa' or install it")
        return name
    raise ValueError(f"unknown attn_implementation {name!r}; known: {', '.join(IN_TORCH + tuple(NEEDS_PACKAGE))}, "
                     f"paged|<backend>, or a hub kernel <org>/<repo>")


AttentionBackend = Annotated[str | None, AfterValidator(check_attention_backend)]
