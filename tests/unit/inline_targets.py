"""One of each kind of name a module on the Inline allow-list holds: only its own public
functions, and the names of its ``__all__``, may be run."""

from __future__ import annotations

import functools
import json
from os.path import join
from typing import Any

from tests.unit.blocking import wait_for_release

__all__ = ["Listed", "defined", "wait_for_release"]


def defined(**kwargs: Any) -> dict[str, Any]:
    return {"ran": "defined", **kwargs}


async def defined_async() -> str:
    return "defined_async"


def _private() -> str:
    return "private"


class Listed:
    """A class, even named in __all__, is not a function."""


class _Callable:
    def __call__(self) -> str:
        return "instance"


instance = _Callable()
partial = functools.partial(defined, bound=True)
builtin = len
imported = join
imported_module = json
special_form = Any
