"""Request and response models, and the input model generated from a version's metadata."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import chain
from math import hypot
from operator import itemgetter
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
    create_model,
    field_validator,
)

from common.errors import InvalidInput
from common.exact_body import ExactBody
from common.input_problems import MAX_DETAILS, MAX_MAGNITUDE, check_widths, refusal
from common.registry import ModelMetadata

_PYTHON_TYPES: dict[str, Any] = {
    "float": Annotated[
        float, Strict(), Field(allow_inf_nan=False, ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE)
    ],
    "int": Annotated[int, Strict()],
    "bool": Annotated[bool, Strict()],
}


_EXACT_TYPES: dict[str, type] = {"float": float, "int": int, "bool": bool}
SLICE_ROWS = 500  # rows per pydantic call: about 7 ms of 30 float features


def build_input_model(meta: ModelMetadata) -> type[BaseModel]:
    """One row of input: every feature required, typed, nothing else allowed."""
    fields: dict[str, Any] = {
        f"f{i}": (
            _PYTHON_TYPES[feature.type],
            Field(alias=feature.name, description=_range_text(feature.min, feature.max)),
        )
        for i, feature in enumerate(meta.features)
    }
    return create_model(
        f"{meta.model_type}_v{meta.version}_row",
        __config__=ConfigDict(extra="forbid"),
        **fields,
    )


def _range_text(low: float | None, high: float | None) -> str | None:
    if low is None or high is None:
        return None
    return f"observed in training: {low:.6g} to {high:.6g}"


class InputValidator:
    """Compiled once per model version: turns `input_data` into rows in feature order."""

    def __init__(self, meta: ModelMetadata, max_rows: int) -> None:
        self.meta = meta
        self.max_rows = max_rows
        self.row_model = build_input_model(meta)
        self.exact = ExactBody(meta)
        self._rows = TypeAdapter(list[self.row_model])  # type: ignore[name-defined]
        self._fields = list(self.row_model.model_fields)
        self._names = meta.feature_names
        self._keys = set(self._names)
        self._types = tuple(_EXACT_TYPES[feature.type] for feature in meta.features)
        names = self._names
        # itemgetter of one name returns the value itself, not a 1-tuple
        self._values = itemgetter(*names) if len(names) > 1 else lambda row: (row[names[0]],)

    def json_schema(self) -> dict[str, Any]:
        return self.row_model.model_json_schema(by_alias=True)

    def validate(self, input_data: Any, max_rows: int | None = None) -> list[list[Any]]:
        max_rows = max_rows or self.max_rows
        rows = [input_data] if isinstance(input_data, dict) else input_data
        if not isinstance(rows, list):
            raise InvalidInput(
                "input_data must be an object of feature values or a list of such objects"
            )
        if not rows:
            raise InvalidInput("input_data is an empty list; send at least one row")
        if len(rows) > max_rows:
            raise InvalidInput(
                f"too many rows: {len(rows)} > {max_rows} per request; "
                "split the request or submit a job"
            )
        fast = self._exact_rows(rows)
        if fast is not None:
            return fast
        check_widths(rows, self._names, single=isinstance(input_data, dict))
        return self._through_pydantic(rows, single=isinstance(input_data, dict))

    def exact_rows(self, text: bytes, max_rows: int | None = None) -> list[list[Any]] | None:
        """A body's rows straight from its JSON text if the body is exactly right
        (common.exact_body), else None: parse it and `validate` its input_data instead."""
        return self.exact.rows(text, max_rows or self.max_rows)

    def _through_pydantic(self, rows: list[Any], single: bool) -> list[list[Any]]:
        """Every row through the pydantic model, SLICE_ROWS at a time: one call holds the
        GIL throughout, so for a big body (validated on a thread) the event loop gets its
        turn between slices instead of after all of them. The problems of every slice
        are named, with their rows' indices in the whole input."""
        fields, out, problems = self._fields, [], []
        for start in range(0, len(rows), SLICE_ROWS):
            try:
                models = self._rows.validate_python(rows[start : start + SLICE_ROWS])
            except ValidationError as exc:
                problems += _details(exc, start, single)
                if len(problems) >= MAX_DETAILS:
                    break
                continue
            out += [[getattr(model, name) for name in fields] for model in models]
        if problems:
            raise refusal(problems[:MAX_DETAILS], single)
        return out

    def _exact_rows(self, rows: list[Any]) -> list[list[Any]] | None:
        """The rows in feature order if every row is exactly right, else None.

        The common case, checked with C-level operations over many rows at once: exactly
        the features (a dict of as many keys as the features, every feature found), each
        value exactly of its feature's type (a bool is not an int here), the Euclidean
        norm of all the values below MAX_MAGNITUDE (so no NaN, no infinity, no value out
        of range: NaN compares false; the norm is at least the largest magnitude, and the
        margin covers its rounding). Everything it accepts, the pydantic model accepts
        with the same values; anything else goes to pydantic, which also names the
        problem. A third of the API's time on 1,000-row requests went to pydantic."""
        get_values, size, types = self._values, len(self._keys), self._types
        for row in rows:
            # with every name found below, as many keys as names means exactly the names
            if type(row) is not dict or len(row) != size:
                return None
        only = {types[0]} if types.count(types[0]) == len(types) else None
        limit = MAX_MAGNITUDE * 0.999  # hypot is within an ulp or two of the exact norm
        out: list[list[Any]] = []
        step = 1000  # rows at a time: bounds the flat copies and each C call's hold on the GIL
        for start in range(0, len(rows), step):
            try:
                values = list(map(get_values, rows[start : start + step]))
            except KeyError:  # a feature missing (so another key in its place)
                return None
            flat = values[0] if len(values) == 1 else list(chain.from_iterable(values))
            if only is not None:  # one type for every feature (all float, the usual)
                if not only.issuperset(map(type, flat)):
                    return None
            elif tuple(map(type, flat)) != types * len(values):
                return None
            try:
                if not hypot(*flat) <= limit:
                    return None
            except OverflowError:  # an int too large for a float: pydantic decides
                return None
            out += map(list, values)
        return out


def _details(exc: ValidationError, offset: int, single: bool) -> list[dict[str, Any]]:
    """pydantic's errors for rows starting at `offset`, as the API names them."""
    details: list[dict[str, Any]] = []
    for error in exc.errors(include_url=False, include_input=False)[:MAX_DETAILS]:
        loc = list(error["loc"])
        index = loc.pop(0) if loc and isinstance(loc[0], int) else None
        row = None if index is None else offset + int(index)
        feature = ".".join(map(str, loc)) or None
        problem = _PROBLEMS.get(error["msg"], error["msg"])
        if error["type"] in {"less_than_equal", "greater_than_equal"}:
            problem = f"out of range: {_OUT_OF_RANGE}"
        details.append({"feature": feature, "problem": problem} | ({} if single else {"row": row}))
    return details


_OUT_OF_RANGE = f"beyond ±{MAX_MAGNITUDE:.8g}, the largest 32-bit float"
_PROBLEMS = {
    "Field required": "missing",
    "Extra inputs are not permitted": "unknown feature",
}


class Prediction(BaseModel):
    label: str | int
    probabilities: dict[str, float]


class PredictResponse(BaseModel):
    model_type: str
    version: str
    predictions: list[Prediction]
    cached: bool
    request_id: str


class ErrorBody(BaseModel):
    type: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class LogEntry(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    request_id: str
    created_at: datetime
    model_type: str
    version: str
    n_rows: int
    input: Any
    output: Any
    latency_ms: float
    cached: bool
    status: str
    error: str | None
    worker: str | None
    owner: str | None = Field(None, description="the key's digest whose request this was")
    job_id: str | None = None
    shadow: bool = Field(False, description="a shadow version's score, never returned")
    primary_request_id: str | None = Field(None, description="the request a shadow row scored")
    truncated: bool = Field(
        False, description="too big for any answer alone: input and output are left out"
    )

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        # SQLite keeps no time zone; every timestamp is written in UTC.
        return value if value.tzinfo else value.replace(tzinfo=UTC)
