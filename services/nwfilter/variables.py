"""Filter variables and the combinations a rule is instantiated with (nwfilter_params.c).

A rule that names variables is written once per combination of their values:

* every ``$NAME`` (iterator 0) and ``$NAME[@N]`` of the same iterator N walk
  their lists in parallel, so they must all have the same number of values;
* different iterators vary independently, iterator 0 fastest, then the others
  in the order the rule first names them;
* ``$NAME[I]`` takes the I-th value and does not vary;
* a parallel step whose values were all seen at an earlier step of the same
  iterator is skipped, so duplicate pairs give one rule.

Errors carry libvirt's messages (``VIR_ERR_INTERNAL_ERROR``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from shared.conf.nwfilter_params import VarAccess
from shared.util.errors import ErrorCode, ErrorDomain, VirtError

#: Variable name -> its values in order (one value: a plain variable).
Variables = Mapping[str, Sequence[str]]


def _internal(message: str) -> VirtError:
    return VirtError(ErrorCode.INTERNAL_ERROR, message, ErrorDomain.NWFILTER)


@dataclass
class _Iterator:
    """One iterator: the variables it walks in parallel and its position."""

    names: list[str] = field(default_factory=list)
    minimum: int = 0
    maximum: int = 0
    current: int = 0

    def add(self, values: Sequence[str], access: VarAccess) -> None:
        if access.index is not None:
            low = high = access.index
        else:
            low, high = 0, len(values) - 1
        if not self.names:
            self.minimum, self.maximum, self.current = low, high, low
        elif self.maximum != high:
            raise _internal(
                "Cardinality of list items must be the same for processing them in parallel"
            )
        self.names.append(access.name)

    def unique(self, variables: Variables) -> bool:
        """False when the values at ``current`` were all seen at an earlier position."""
        first = variables[self.names[0]]
        if self.current >= len(first):
            return True
        value = first[self.current]
        for earlier in range(self.current):
            if first[earlier] != value:
                continue
            if all(
                _nth(variables[name], self.current) == _nth(variables[name], earlier)
                for name in self.names[1:]
            ):
                return False
        return True


def _nth(values: Sequence[str], index: int) -> str | None:
    return values[index] if index < len(values) else None


def combinations(
    variables: Variables, accesses: Sequence[VarAccess]
) -> Iterator[Mapping[VarAccess, str]]:
    """Every combination of values for ``accesses`` (distinct, in the rule's
    order), each as access -> value; one empty combination when there are none.

    Raises ``VirtError`` for a variable without a value, lists of different
    lengths on one iterator, or an index past the end of a list.
    """
    iterators: list[_Iterator] = [_Iterator()]
    ids: list[int | None] = [0]  # iterator id per iterator; None: an element access
    where: dict[VarAccess, int] = {}
    for access in accesses:
        values = variables.get(access.name)
        if values is None:
            raise _internal(f"Could not find value for variable '{access.name}'")
        if access.index is not None:
            iterators.append(_Iterator())
            ids.append(None)
            position = len(iterators) - 1
        elif access.iterator in ids:
            position = ids.index(access.iterator)
        else:
            iterators.append(_Iterator())
            ids.append(access.iterator)
            position = len(iterators) - 1
        iterators[position].add(values, access)
        where[access] = position
    while True:
        combo: dict[VarAccess, str] = {}
        for access, position in where.items():
            value = _nth(variables[access.name], iterators[position].current)
            if value is None:
                raise _internal(
                    f"Could not get nth ({iterators[position].current}) value of "
                    f"variable '{access.name}'"
                )
            combo[access] = value
        yield combo
        if not _advance(iterators, variables):
            return


def _advance(iterators: list[_Iterator], variables: Variables) -> bool:
    """virNWFilterVarCombIterNext: step to the next combination; False at the end."""
    for it in iterators:
        while True:
            it.current += 1
            if it.current > it.maximum:
                it.current = it.minimum
                break
            if it.unique(variables):
                return True
    return False
