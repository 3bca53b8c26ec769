"""The registry of steering methods: one package each (`methods/NAME/`: its `Method` record in
`__init__.py`, its recipe, its steering), and one line each below. Every command asks here
(`get`, `METHODS`) instead of branching on a method's name; `base.Method` documents what a
record holds."""

from steerable.errors import SteerableError
from steerable.methods import (
    genarm,
    lora_mix,
    mod,
    morlhf,
    moslim,
    np_dpo,
    prompting,
    ric,
    ric_image,
    soups,
    tags,
)
from steerable.methods.base import Method

METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        ric.METHOD,
        moslim.METHOD,
        np_dpo.METHOD,
        soups.METHOD,
        mod.METHOD,
        lora_mix.METHOD,
        genarm.METHOD,
        morlhf.METHOD,
        prompting.METHOD,
        tags.METHOD,
        ric_image.METHOD,
    )
}


def names(where=lambda method: True) -> list[str]:
    """The registered methods' names (those `where` accepts), in registry order."""
    return [name for name, method in METHODS.items() if where(method)]


def get(name: str, where=lambda method: True, what: str = "method") -> Method:
    """The method called `name`; a SteerableError listing the choices (those `where` accepts)
    otherwise."""
    method = METHODS.get(name)
    if method is None or not where(method):
        raise SteerableError(f"unknown {what} {name!r}; choose from {names(where)}")
    return method
