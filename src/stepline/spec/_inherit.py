"""What the ``run`` steps of a job or task inherit from around them: ``env``, ``cwd``, matrix.

A job and a task may carry ``env`` and ``cwd``; every ``run`` step below them (in templates they
``use`` too) inherits them: the nearest ``cwd`` wins, and ``env`` objects merge, the nearest
value of a variable winning. The merge happens at validation, so a :class:`~._model.Run` spec
holds its effective ``env`` and ``cwd`` and the engine (and the ``--allow-run`` policy, which
looks at ``env``) never has to know where a value came from.

The matrix values of a task instance (``${matrix.NAME}``) travel with the same object, since
they too are given by the task around the steps; unlike ``env`` and ``cwd`` they stop at a
template's edge (a template is its own scope: pass values in through ``with``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import attrs
from attrs import frozen

from .._record import ValueRecord

__all__ = ["NOTHING_INHERITED", "Inherited"]


@frozen(repr=False, eq=False)
class Inherited(ValueRecord):
    """The ``env``, ``cwd`` and matrix values in force where a step is validated.

    ``matrix`` is None outside a matrix task; ``${matrix.X}`` is then an error.
    """

    env: Mapping[str, str] | None = None
    cwd: str | None = None
    matrix: Mapping[str, Any] | None = None

    def under(self, env: Mapping[str, str] | None, cwd: str | None) -> Inherited:
        """What a job or task with this ``env`` and ``cwd`` hands to its steps."""
        if env is None and cwd is None:
            return self
        return attrs.evolve(
            self, env=merge_env(self.env, env), cwd=cwd if cwd is not None else self.cwd
        )

    def with_matrix(self, values: Mapping[str, Any]) -> Inherited:
        """The same, inside one instance of a matrix task."""
        return attrs.evolve(self, matrix=values)

    def for_template(self) -> Inherited:
        """What a template ``use``\\d here sees: ``env`` and ``cwd``, never matrix values."""
        return self if self.matrix is None else attrs.evolve(self, matrix=None)

    def run_env(self, own: Mapping[str, str] | None) -> Mapping[str, str] | None:
        """A ``run`` step's effective ``env``: its own over the inherited one."""
        return merge_env(self.env, own)

    def run_cwd(self, own: str | None) -> str | None:
        """A ``run`` step's effective ``cwd``: its own, else the nearest inherited one."""
        return own if own is not None else self.cwd


NOTHING_INHERITED: Final = Inherited()


def merge_env(
    outer: Mapping[str, str] | None, inner: Mapping[str, str] | None
) -> Mapping[str, str] | None:
    """``inner`` over ``outer`` (None when both are; no copy when one is missing)."""
    if not outer:
        return inner if inner is not None else outer
    if not inner:
        return outer
    return {**outer, **inner}
