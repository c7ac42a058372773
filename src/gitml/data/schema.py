"""The dataset schema: one object, built from the dataset config, shared by every stage.

Ingest validates and anonymises with it, training takes its feature list from it, and the
server (which has no pandas) validates requests with it, so this module needs only the
standard library and NumPy.
"""

from __future__ import annotations

import codecs
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from gitml.checked_config import ConfigReader, suggest
from gitml.errors import GitmlError

ROLES = ("feature", "label", "protected", "identifier")
DTYPES = ("integer", "float", "categorical", "string")
PII_POLICIES = ("keep", "drop", "pseudonymize", "generalize")
DUPLICATE_POLICIES = ("quarantine", "keep")

_COLUMN_KEYS = {
    "dtype", "role", "nullable", "pii", "categories", "min", "max", "positive",
    "feature", "bands", "generalize", "description",
}  # fmt: skip
_GENERALIZE_KEYS = {"bins", "top_code", "groups", "other"}
_RAW_KEYS = {"files", "delimiter", "header", "missing_values", "strip_suffix", "encoding"}
_FILE_KEYS = {"path", "skip_rows", "header", "delimiter", "generalised"}
GLOB_CHARACTERS = frozenset("*?[")
# Columns a generalised file may lack: the schema removes or replaces their values anyway, and a
# prediction log never has them (the server takes model inputs and protected attributes only).
ABSENT_IN_GENERALISED = ("drop", "pseudonymize")
_QUALITY_KEYS = {"max_quarantined_fraction", "duplicates", "pii_max_matches"}
_TOP_KEYS = {"name", "description", "raw", "columns", "quality", "pseudonym_key_env"}


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def band_labels(edges: Sequence[float], integer: bool) -> tuple[str, ...]:
    """Readable labels for the bands cut at `edges`: <25, 25-44, 45-64, 65+ (integers)."""
    labels = [f"<{_number_text(edges[0])}"]
    for low, high in itertools.pairwise(edges):
        upper = _number_text(high - 1) if integer else _number_text(high)
        labels.append(f"{_number_text(low)}-{upper}" if integer else f"[{_number_text(low)}, {upper})")
    labels.append(f"{_number_text(edges[-1])}+")
    return tuple(labels)


def assign_bands(values: npt.ArrayLike, edges: Sequence[float], labels: Sequence[str]) -> npt.NDArray[np.object_]:
    """Map numbers to band labels; NaN stays missing (None)."""
    array = np.asarray(values, dtype=float)
    index = np.searchsorted(np.asarray(edges), array, side="right")
    out: npt.NDArray[np.object_] = np.asarray(labels, dtype=object)[np.minimum(index, len(labels) - 1)]
    out[np.isnan(array)] = None
    return out


@dataclass(frozen=True)
class Generalization:
    """How a `generalize` column is coarsened: numeric bins, a top code, or category groups."""

    bins: tuple[float, ...] | None = None
    bin_labels: tuple[str, ...] | None = None
    top_code: float | None = None
    groups: Mapping[str, str] | None = None  # original category -> group
    group_names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Column:
    """One column of the dataset, as the dataset config declares it."""

    name: str
    dtype: str
    role: str
    pii: str
    nullable: bool = False
    categories: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    positive: str | None = None
    feature: bool = True
    bands: tuple[float, ...] | None = None
    band_labels: tuple[str, ...] | None = None
    generalization: Generalization | None = None
    description: str = ""

    @property
    def numeric(self) -> bool:
        return self.dtype in ("integer", "float")

    @property
    def output_dtype(self) -> str:
        """The dtype after anonymisation (binned numbers become categories, hashes strings)."""
        if self.pii == "pseudonymize":
            return "string"
        if self.generalization is not None and self.generalization.bins is not None:
            return "categorical"
        return self.dtype

    @property
    def output_categories(self) -> tuple[str, ...] | None:
        """The categories after anonymisation, or None for non-categorical output."""
        gen = self.generalization
        if gen is not None and gen.bin_labels is not None:
            return gen.bin_labels
        if gen is not None and gen.group_names is not None:
            return gen.group_names
        return self.categories if self.output_dtype == "categorical" else None

    @property
    def generalised_values(self) -> tuple[str, ...]:
        """What a generalised raw file may hold in place of a raw value: the group names that are not
        also raw categories, or the band labels of binned numbers; empty for other columns."""
        gen = self.generalization
        if gen is not None and gen.group_names is not None:
            return tuple(g for g in gen.group_names if g not in (self.categories or ()))
        if gen is not None and gen.bin_labels is not None:
            return gen.bin_labels
        return ()


@dataclass(frozen=True)
class RawFile:
    """One entry of raw.files: a path, or a glob pattern (which may match no file), and how to read it.

    `header` and `delimiter` override the raw section's for these files. A `generalised` file holds
    records as they are after anonymisation (what the server logs and `gitml collect` writes): its
    columns are matched by the header's names, columns the schema drops or pseudonymises may be
    absent or empty, and group names and band labels are taken as already generalised.
    """

    path: str
    skip_rows: int = 0
    header: bool | None = None
    delimiter: str | None = None
    generalised: bool = False

    @property
    def is_glob(self) -> bool:
        return any(c in GLOB_CHARACTERS for c in self.path)


@dataclass(frozen=True)
class RawFormat:
    """How the raw files are laid out."""

    files: tuple[RawFile, ...]
    delimiter: str = ","
    header: bool = True
    missing_values: tuple[str, ...] = ("",)
    strip_suffix: Mapping[str, str] = field(default_factory=dict)
    encoding: str = "utf-8"

    def header_of(self, raw_file: RawFile) -> bool:
        return self.header if raw_file.header is None else raw_file.header

    def delimiter_of(self, raw_file: RawFile) -> str:
        return self.delimiter if raw_file.delimiter is None else raw_file.delimiter


@dataclass(frozen=True)
class Quality:
    """How much bad data ingest tolerates before it fails the pipeline."""

    max_quarantined_fraction: float = 0.01
    duplicates: str = "quarantine"
    pii_max_matches: int = 0


@dataclass(frozen=True)
class DatasetSchema:
    """Types, categories, ranges, roles and PII policy of every column of one dataset."""

    name: str
    columns: tuple[Column, ...]
    raw: RawFormat
    quality: Quality
    pseudonym_key_env: str = "GITML_PSEUDONYM_KEY"
    source: str = "dataset config"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    @property
    def label(self) -> Column:
        return next(c for c in self.columns if c.role == "label")

    @property
    def positive_class(self) -> str:
        assert self.label.positive is not None
        return self.label.positive

    @property
    def kept_columns(self) -> tuple[Column, ...]:
        """Columns that survive anonymisation, in config order."""
        return tuple(c for c in self.columns if c.pii != "drop")

    @property
    def feature_columns(self) -> tuple[Column, ...]:
        """Model inputs: features, and protected attributes marked `feature: true`."""
        return tuple(c for c in self.kept_columns if c.role == "feature" or (c.role == "protected" and c.feature))

    @property
    def protected_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.kept_columns if c.role == "protected")

    def protected_named(self, names: Sequence[str], key: str, source: str) -> tuple[str, ...]:
        """`names` (the value of setting `key`), each checked to be a protected column of this schema."""
        protected = [c.name for c in self.protected_columns]
        for name in names:
            if name not in protected:
                raise GitmlError(
                    f"{source}: {key} names '{name}', which the dataset schema does not mark protected"
                    f"{suggest(name, protected)} (protected: {', '.join(protected) or 'none'}); name protected "
                    "columns, or null for all of them."
                )
        return tuple(names)

    def protected_groups(self, name: str, values: npt.ArrayLike) -> npt.NDArray[np.object_]:
        """Group label of each value of a protected attribute (numbers fall into their band)."""
        col = self.column(name)
        if col.role != "protected":
            raise KeyError(f"{name} is not a protected attribute")
        if col.bands is not None and col.band_labels is not None:
            return assign_bands(values, col.bands, col.band_labels)
        return np.asarray(values, dtype=object)

    @classmethod
    def from_config(cls, cfg: Any, source: str = "dataset config") -> DatasetSchema:
        """Build and check the schema; every mistake raises GitmlError naming its place."""
        top = ConfigReader(source, "dataset", cfg, _TOP_KEYS)
        name = str(top.required("name"))
        raw = _read_raw(source, top.required("raw"))
        quality = _read_quality(source, top.get("quality", {}))
        columns_cfg = top.required("columns")
        if not isinstance(columns_cfg, Mapping) or not columns_cfg:
            top.fail("columns must be a non-empty mapping of column name to its declaration")
        columns = tuple(_read_column(source, str(n), spec) for n, spec in columns_cfg.items())

        labels = [c.name for c in columns if c.role == "label"]
        if len(labels) != 1:
            top.fail(f"exactly one column must have role 'label', found {len(labels)} ({', '.join(labels) or 'none'})")
        for col_name in raw.strip_suffix:
            if col_name not in columns_cfg:
                top.fail(
                    f"raw.strip_suffix names '{col_name}', which is not a column{suggest(col_name, list(columns_cfg))}"
                )
        key_env = str(top.get("pseudonym_key_env", "GITML_PSEUDONYM_KEY"))
        return cls(name, columns, raw, quality, key_env, source)


def _read_raw(source: str, cfg: Any) -> RawFormat:
    reader = ConfigReader(source, "raw", cfg, _RAW_KEYS)
    files_cfg = reader.required("files")
    if not isinstance(files_cfg, Sequence) or isinstance(files_cfg, str) or not files_cfg:
        reader.fail("files must be a non-empty list of {path: ..., skip_rows: ...}")
    delimiter = _delimiter(reader)
    header = reader.boolean("header", True)
    files = []
    for i, entry in enumerate(files_cfg):
        if isinstance(entry, str):
            entry = {"path": entry}
        file_reader = ConfigReader(source, f"raw.files[{i}]", entry, _FILE_KEYS)
        raw_file = RawFile(
            str(file_reader.required("path")),
            file_reader.integer("skip_rows", 0),
            header=file_reader.boolean("header") if "header" in file_reader.mapping else None,
            delimiter=_delimiter(file_reader) if "delimiter" in file_reader.mapping else None,
            generalised=file_reader.boolean("generalised", False),
        )
        if raw_file.generalised and not (header if raw_file.header is None else raw_file.header):
            file_reader.fail("a generalised file's columns are matched by their names: it needs header: true")
        files.append(raw_file)
    encoding = str(reader.get("encoding", "utf-8"))
    try:
        codecs.lookup(encoding)
    except LookupError:
        reader.fail(f"encoding '{encoding}' is not a text encoding Python knows (e.g. utf-8, latin-1, cp1252)")
    suffixes = reader.get("strip_suffix", {}) or {}
    if not isinstance(suffixes, Mapping):
        reader.fail("strip_suffix must map a column name to the suffix to strip")
    return RawFormat(
        files=tuple(files),
        delimiter=delimiter,
        header=header,
        missing_values=reader.strings("missing_values", ("",)),
        strip_suffix={str(k): str(v) for k, v in suffixes.items()},
        encoding=encoding,
    )


def _delimiter(reader: ConfigReader) -> str:
    delimiter = str(reader.get("delimiter", ","))
    if len(delimiter) != 1:
        reader.fail(f"delimiter must be one character, got {delimiter!r}")
    return delimiter


def _read_quality(source: str, cfg: Any) -> Quality:
    reader = ConfigReader(source, "quality", cfg, _QUALITY_KEYS)
    fraction = reader.number("max_quarantined_fraction", 0.01)
    assert fraction is not None
    if not 0 <= fraction <= 1:
        reader.fail(f"max_quarantined_fraction must be between 0 and 1, got {fraction}")
    matches = reader.integer("pii_max_matches", 0)
    return Quality(fraction, reader.choice("duplicates", DUPLICATE_POLICIES, "quarantine"), matches)


def _read_generalization(
    reader: ConfigReader, col: str, dtype: str, categories: tuple[str, ...] | None
) -> Generalization:
    spec = ConfigReader(reader.source, f"column '{col}': generalize", reader.get("generalize"), _GENERALIZE_KEYS)
    if dtype in ("integer", "float"):
        if "bins" in spec.mapping:
            edges = spec.numbers("bins")
            return Generalization(bins=edges, bin_labels=band_labels(edges, dtype == "integer"))
        if "top_code" in spec.mapping:
            return Generalization(top_code=spec.number("top_code"))
        spec.fail("a numeric column is generalized with 'bins' (band edges) or 'top_code' (an upper cap)")
    if dtype != "categorical" or "groups" not in spec.mapping:
        spec.fail("a categorical column is generalized with 'groups' (group name: [categories])")
    groups_cfg = spec.get("groups")
    if not isinstance(groups_cfg, Mapping) or not groups_cfg:
        spec.fail("groups must map each group name to a list of categories")
    assert categories is not None
    mapping: dict[str, str] = {}
    for group, members in groups_cfg.items():
        member_reader = ConfigReader(
            reader.source, f"column '{col}': generalize.groups", {"members": members}, {"members"}
        )
        for member in member_reader.strings("members"):
            if member not in categories:
                hint = suggest(member, categories)
                spec.fail(f"group '{group}' lists '{member}', which is not a category of '{col}'{hint}")
            if member in mapping:
                spec.fail(f"'{member}' is in both group '{mapping[member]}' and group '{group}'")
            mapping[member] = str(group)
    other = spec.get("other")
    unmapped = [c for c in categories if c not in mapping]
    if unmapped and other is None:
        spec.fail(f"categories {', '.join(unmapped)} belong to no group; add them to a group or set 'other'")
    for c in unmapped:
        mapping[c] = str(other)
    names = tuple(dict.fromkeys(mapping[c] for c in categories))
    return Generalization(groups=mapping, group_names=names)


def _read_column(source: str, name: str, cfg: Any) -> Column:
    reader = ConfigReader(source, f"column '{name}'", cfg, _COLUMN_KEYS)
    dtype = reader.choice("dtype", DTYPES)
    role = reader.choice("role", ROLES)
    pii = reader.choice("pii", PII_POLICIES, "keep")
    nullable = reader.boolean("nullable", False)

    categories = None
    if dtype == "categorical":
        categories = reader.strings("categories")
        if not categories:
            reader.fail("categories must list at least one value")
    elif "categories" in reader.mapping:
        reader.fail(f"categories are for categorical columns, but dtype is '{dtype}'")

    minimum = reader.number("min", None)
    maximum = reader.number("max", None)
    if (minimum is not None or maximum is not None) and dtype not in ("integer", "float"):
        reader.fail(f"min/max are for numeric columns, but dtype is '{dtype}'")
    if minimum is not None and maximum is not None and minimum > maximum:
        reader.fail(f"min {minimum:g} is greater than max {maximum:g}")

    positive = reader.get("positive")
    if role == "label":
        if dtype != "categorical":
            reader.fail("the label must be categorical (list its classes under categories)")
        if positive is None:
            reader.fail("the label needs 'positive': the class the model predicts the probability of")
        assert categories is not None
        if str(positive) not in categories:
            reader.fail(f"positive class '{positive}' is not one of its categories {list(categories)}")
        if pii != "keep" or nullable:
            reader.fail("the label must be kept as it is (pii: keep) and may not be missing (nullable: false)")
    elif positive is not None:
        reader.fail("'positive' is only for the label column")

    bands = band_names = None
    if "bands" in reader.mapping:
        if role != "protected" or dtype not in ("integer", "float"):
            reader.fail("bands group a numeric protected attribute (e.g. age) for fairness reports")
        bands = reader.numbers("bands")
        band_names = band_labels(bands, dtype == "integer")
    if "feature" in reader.mapping and role != "protected":
        reader.fail(
            "'feature' says whether a protected attribute is also a model input; it is only for role: protected"
        )
    if role == "identifier" and pii == "keep":
        reader.fail("an identifier must not be kept as it is: use pii: pseudonymize or drop")

    generalization = None
    if pii == "generalize":
        if "generalize" not in reader.mapping:
            reader.fail("pii: generalize needs a 'generalize' block (bins, top_code or groups)")
        generalization = _read_generalization(reader, name, dtype, categories)
    elif "generalize" in reader.mapping:
        reader.fail(f"a 'generalize' block needs pii: generalize, but pii is '{pii}'")
    if role == "protected" and pii in ("drop", "pseudonymize"):
        reader.fail(f"a protected attribute is needed for fairness checks; pii: {pii} would remove it")

    return Column(
        name=name,
        dtype=dtype,
        role=role,
        pii=pii,
        nullable=nullable,
        categories=categories,
        minimum=minimum,
        maximum=maximum,
        positive=None if positive is None else str(positive),
        feature=reader.boolean("feature", True),
        bands=bands,
        band_labels=band_names,
        generalization=generalization,
        description=str(reader.get("description", "")),
    )
