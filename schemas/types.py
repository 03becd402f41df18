"""Feature types: the scalar and collection types of the reference service, and one feature's definition."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from schemas.errors import DefinitionError
from schemas.names import MAX_VECTOR_DIMENSION, validate_name


class ScalarType(StrEnum):
    STRING = "String"          # UTF-8 text
    INTEGRAL = "Integral"      # signed 64-bit integer
    FRACTIONAL = "Fractional"  # IEEE 754 double, finite


class CollectionType(StrEnum):
    LIST = "List"      # ordered, duplicates allowed
    SET = "Set"        # no duplicates
    VECTOR = "Vector"  # Fractional, fixed dimension


INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def _enum(cls: type[StrEnum], value: object, what: str, name: object) -> Any:
    if isinstance(value, cls):
        return value
    try:
        return cls(value)
    except (ValueError, TypeError):
        valid = ", ".join(m.value for m in cls)
        raise DefinitionError(f"feature {name!r}: {what} {value!r} is not one of {valid}",
                              feature=name if isinstance(name, str) else None, value=value) from None


@dataclass(frozen=True, slots=True)
class FeatureDefinition:
    """One feature: its name, scalar type and, for collections, the collection type.

    Strings are accepted for ``type``/``collection`` ("String", "List") and turned into the enums.
    """

    name: str
    type: ScalarType
    collection: CollectionType | None = None
    dimension: int | None = None  # Vector only

    def __post_init__(self) -> None:
        validate_name(self.name, "feature")
        object.__setattr__(self, "type", _enum(ScalarType, self.type, "type", self.name))
        if self.collection is not None:
            object.__setattr__(self, "collection",
                               _enum(CollectionType, self.collection, "collection type", self.name))
        if self.collection is CollectionType.VECTOR:
            if self.type is not ScalarType.FRACTIONAL:
                raise DefinitionError(
                    f"feature {self.name!r}: a Vector holds Fractional values; got type {self.type.value}",
                    feature=self.name, value=self.type.value)
            dim = self.dimension
            if type(dim) is not int or not 1 <= dim <= MAX_VECTOR_DIMENSION:
                raise DefinitionError(
                    f"feature {self.name!r}: a Vector needs a dimension, an integer from 1 to "
                    f"{MAX_VECTOR_DIMENSION}; got {dim!r}", feature=self.name, value=dim)
        elif self.dimension is not None:
            raise DefinitionError(
                f"feature {self.name!r}: dimension {self.dimension!r} is only valid for a Vector "
                f"(collection={self.collection.value if self.collection else None})",
                feature=self.name, value=self.dimension)

    @property
    def is_scalar(self) -> bool:
        return self.collection is None

    def describe(self) -> str:
        """Human-readable type, e.g. ``Integral``, ``List<String>``, ``Vector<Fractional>[3]``."""
        if self.collection is None:
            return self.type.value
        text = f"{self.collection.value}<{self.type.value}>"
        return f"{text}[{self.dimension}]" if self.collection is CollectionType.VECTOR else text

    def to_api(self) -> dict[str, Any]:
        """SageMaker FeatureDefinitions form."""
        d: dict[str, Any] = {"FeatureName": self.name, "FeatureType": self.type.value}
        if self.collection is not None:
            d["CollectionType"] = self.collection.value
            if self.collection is CollectionType.VECTOR:
                d["CollectionConfig"] = {"VectorConfig": {"Dimension": self.dimension}}
        return d

    @classmethod
    def from_api(cls, d: Any) -> FeatureDefinition:
        """Parse SageMaker's FeatureDefinitions form; DefinitionError on anything malformed."""
        if not isinstance(d, dict):
            raise DefinitionError(
                "a feature definition must be an object like "
                '{"FeatureName": "age", "FeatureType": "Integral"}; got ' + _short(d), value=d)
        name = d.get("FeatureName")
        if name is None:
            raise DefinitionError(f"feature definition {_short(d)} has no FeatureName", value=d)
        ftype = d.get("FeatureType")
        if ftype is None:
            raise DefinitionError(f"feature {name!r} has no FeatureType (String, Integral or Fractional)",
                                  feature=name if isinstance(name, str) else None, value=d)
        collection = d.get("CollectionType")
        dimension = None
        config = d.get("CollectionConfig")
        if config is not None:
            vector = config.get("VectorConfig") if isinstance(config, dict) else None
            if not isinstance(vector, dict) or "Dimension" not in vector:
                raise DefinitionError(
                    f"feature {name!r}: CollectionConfig must be "
                    f'{{"VectorConfig": {{"Dimension": N}}}}; got {_short(config)}',
                    feature=name if isinstance(name, str) else None, value=config)
            dimension = vector["Dimension"]
        return cls(name, ftype, collection, dimension)


def _short(value: object, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"
