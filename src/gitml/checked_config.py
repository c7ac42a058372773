"""Reading hand-written config with messages that say where a mistake is and what was meant.

Standard library only: the dataset schema, and with it the server, builds on this.
"""

from __future__ import annotations

import difflib
import itertools
import math
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any, Final, Literal, NoReturn

from gitml.errors import GitmlError


class _Required(Enum):
    REQUIRED = "required"


# The default of a ConfigReader read: the key must be there. Defaults of params.yaml's sections
# live in conf/ only, so their readers pass none; the dataset schema's optional keys pass theirs.
REQUIRED: Final = _Required.REQUIRED
Required = Literal[_Required.REQUIRED]


def suggest(word: str, choices: Sequence[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class ConfigReader:
    """Reads one mapping of a config, naming the place (`source: where: key`) of every problem."""

    def __init__(self, source: str, where: str, mapping: Any, allowed: set[str]) -> None:
        self.source = source
        self.where = where
        if not isinstance(mapping, Mapping):
            self.fail(f"expected a mapping, got {type(mapping).__name__} ({mapping!r})")
        self.mapping: Mapping[str, Any] = mapping
        for key in mapping:
            if key not in allowed:
                self.fail(
                    f"unknown key '{key}'{suggest(str(key), sorted(allowed))}; "
                    f"allowed keys are {', '.join(sorted(allowed))}"
                )

    def fail(self, problem: str) -> NoReturn:
        raise GitmlError(f"{self.source}: {self.where}: {problem}.")

    def get(self, key: str, default: Any = None) -> Any:
        return self.mapping.get(key, default)

    def _value(self, key: str, default: Any) -> Any:
        if default is REQUIRED:
            return self.required(key)
        return self.mapping.get(key, default)

    def required(self, key: str) -> Any:
        if key not in self.mapping:
            self.fail(f"'{key}' is required")
        return self.mapping[key]

    def choice(self, key: str, choices: Sequence[str], default: str | Required = REQUIRED) -> str:
        value = self._value(key, default)
        if value not in choices:
            self.fail(f"{key} '{value}' is not one of {', '.join(choices)}{suggest(str(value), choices)}")
        return str(value)

    def boolean(self, key: str, default: bool | Required = REQUIRED) -> bool:
        value = self._value(key, default)
        if not isinstance(value, bool):
            self.fail(f"{key} must be true or false, got {value!r}")
        return bool(value)

    def number(self, key: str, default: float | Required | None = REQUIRED) -> float | None:
        """A number; None where the key is null, or missing with a default of None."""
        value = self._value(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            self.fail(f"{key} must be a number, got {value!r}")
        return float(value)

    def bounded(
        self, key: str, low: float, high: float | None = None, open_ends: bool = False, unit: str = ""
    ) -> float:
        """A number from `low` (to `high`), both included, or with `open_ends` both excluded."""
        value = self.number(key)
        inside = value is not None and (low < value if open_ends else low <= value)
        if value is not None and high is not None:
            inside = inside and (value < high if open_ends else value <= high)
        if not inside:
            if high is None:
                where = f"above {low:g}" if open_ends else f">= {low:g}"
            else:
                where = f"in ({low:g}, {high:g})" if open_ends else f"in [{low:g}, {high:g}]"
            self.fail(f"{key} must be a number{unit} {where}, got {self.mapping.get(key)!r}")
        assert value is not None
        return value

    def text(self, key: str) -> str:
        """Non-empty text."""
        value = self.required(key)
        if not isinstance(value, str) or not value.strip():
            self.fail(f"{key} must be text, got {value!r}")
        return value

    def integer(self, key: str, default: int | Required = REQUIRED, minimum: int = 0) -> int:
        value = self._value(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(f"{key} must be a whole number >= {minimum}, got {value!r}")
        return int(value)

    def strings(self, key: str, default: Sequence[str] | Required = REQUIRED) -> tuple[str, ...]:
        value = self._value(key, default)
        if value is None:
            self.fail(f"'{key}' must be a list of strings, got null")
        if not isinstance(value, Sequence) or isinstance(value, str):
            self.fail(f"{key} must be a list of strings, got {value!r}")
        if any(isinstance(v, bool) for v in value):
            self.fail(
                f"{key} has true/false in {list(value)}: YAML reads unquoted yes, no, on, off, true and false "
                "as booleans. Quote them, e.g. ['yes', 'no']"
            )
        nested = [v for v in value if isinstance(v, Mapping | list)]
        if nested:
            self.fail(
                f"{key} has an item that is not a plain value: {nested[0]!r}. In YAML an unquoted item with "
                "': ' in it is a mapping; quote the item"
            )
        items = tuple(str(v) for v in value)
        duplicated = sorted({v for v in items if items.count(v) > 1})
        if duplicated:
            self.fail(f"{key} lists {', '.join(duplicated)} more than once")
        return items

    def numbers(self, key: str) -> tuple[float, ...]:
        value = self.mapping.get(key)
        if (
            not isinstance(value, Sequence)
            or isinstance(value, str)
            or not value
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        ):
            self.fail(f"{key} must be a non-empty list of numbers, got {value!r}")
        edges = tuple(float(v) for v in value)
        if any(b <= a for a, b in itertools.pairwise(edges)):
            self.fail(f"{key} must be strictly increasing, got {list(value)}")
        return edges
