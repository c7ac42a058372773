"""Applying each column's PII policy. NumPy only, so the server can apply it to requests too."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from gitml.data.pii import MIN_KEY_LENGTH, pseudonymize
from gitml.data.schema import Column, DatasetSchema, assign_bands
from gitml.errors import GitmlError


def pseudonym_key(schema: DatasetSchema, env: Mapping[str, str]) -> bytes | None:
    """The HMAC key from the environment, if any column is pseudonymised; it is never committed."""
    needing = [c.name for c in schema.columns if c.pii == "pseudonymize"]
    if not needing:
        return None
    key = env.get(schema.pseudonym_key_env, "")
    if not key:
        raise GitmlError(
            f"column(s) {', '.join(needing)} are pseudonymised with a secret key read from the environment "
            f"variable {schema.pseudonym_key_env}, which is not set. Set it to a random string of at least "
            f"{MIN_KEY_LENGTH} characters (e.g. `export {schema.pseudonym_key_env}=$(openssl rand -hex 32)`; "
            "in CI, a repository secret). Never commit it."
        )
    if len(key) < MIN_KEY_LENGTH:
        raise GitmlError(
            f"{schema.pseudonym_key_env} is {len(key)} characters long; a pseudonymisation key needs at "
            f"least {MIN_KEY_LENGTH} so that the hashes cannot be reversed by guessing it."
        )
    return key.encode("utf-8")


def anonymize_values(column: Column, values: npt.ArrayLike, key: bytes | None) -> npt.NDArray[np.generic]:
    """Apply `column`'s policy to its values (None or NaN marks a missing value, which stays missing).

    A value that is already generalised (a group name, or a band label among the numbers of a binned
    column: what a generalised raw file holds) stays as it is.
    """
    gen = column.generalization
    if column.pii == "generalize" and gen is not None and gen.bins is not None and gen.bin_labels is not None:
        return _bands(values, gen.bins, gen.bin_labels)
    array = np.asarray(values, dtype=object if not column.numeric else float)
    if column.pii == "keep":
        return array
    if column.pii == "drop":
        raise ValueError(f"column {column.name} is dropped, not transformed")
    if column.pii == "pseudonymize":
        if key is None:
            raise ValueError("pseudonymisation needs a key")
        return np.array([None if v is None or v != v else pseudonymize(str(v), key) for v in array], dtype=object)
    assert gen is not None
    if gen.top_code is not None:
        return np.minimum(array, gen.top_code)
    assert gen.groups is not None
    assert gen.group_names is not None
    groups = {**{name: name for name in gen.group_names}, **gen.groups}  # a raw category maps as declared
    return np.array([None if v is None or v != v else groups[str(v)] for v in array], dtype=object)


def _bands(values: npt.ArrayLike, edges: Sequence[float], labels: Sequence[str]) -> npt.NDArray[np.object_]:
    """Numbers as their band labels; a band label among them stays."""
    array = np.asarray(values)
    if array.dtype != object:
        return assign_bands(array, edges, labels)
    known = set(labels)
    given = np.array([isinstance(v, str) and v in known for v in array], dtype=bool)
    numbers = np.array([np.nan if g or v is None else v for v, g in zip(array, given, strict=True)], dtype=float)
    out = assign_bands(numbers, edges, labels)
    out[given] = array[given]
    return out
