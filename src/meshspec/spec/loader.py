"""Load a spec file: every problem of the file in one run, each at its line and column."""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path as FsPath

from pydantic import BaseModel, ValidationError

from meshspec.spec import rules
from meshspec.spec.models import MeshSpec, Service
from meshspec.spec.problems import Path, Problem, SpecInvalid
from meshspec.spec.yamlpos import MAX_CHARACTERS, Positions, load_with_positions


def load_spec(path: str | FsPath, port_offset: int = 0, inventory: frozenset[str] | None = None) -> MeshSpec:
    """The validated spec at `path`, or SpecInvalid listing every problem found; its placements
    checked against `inventory`, the names of the hosts and groups it will be deployed to, if given."""
    filename = str(path)
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_CHARACTERS + 1)  # a 50 MB file is refused, not read whole
    except OSError as err:
        raise SpecInvalid(filename, [Problem(1, 1, "(file)", f"cannot read: {err.strerror or err}")]) from None
    if len(raw) > MAX_CHARACTERS:
        raise SpecInvalid(filename, [Problem(1, 1, "(file)", f"the file is larger than {MAX_CHARACTERS:,} bytes,"
                                                             " the most meshspec reads as a spec")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:  # a binary file, or another encoding
        line = raw.count(b"\n", 0, err.start) + 1
        col = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise SpecInvalid(filename, [Problem(line, col, "(file)", f"not UTF-8 text: byte {raw[err.start]:#04x}"
                                                                  " cannot start or continue a character")]) from None
    return parse_spec(text, filename, port_offset, inventory)


def parse_spec(text: str, filename: str = "<spec>", port_offset: int = 0,
               inventory: frozenset[str] | None = None) -> MeshSpec:
    data, pos, findings = load_with_positions(text)
    label = _labeller(data)
    problems = [Problem(*at, label(p), msg) for p, at, msg in findings]
    if data is None:
        raise SpecInvalid(filename, problems)
    if not isinstance(data, dict):
        raise SpecInvalid(filename, [Problem(*pos.of_value(()), "(file)", "the spec must be a mapping (version, mesh, services, ...)")])
    spec, index = _validate(data, pos, label, problems)
    if spec is not None:
        declared = frozenset(s.get("name") for s in data.get("services") or [] if isinstance(s, dict) and isinstance(s.get("name"), str))
        ctx = rules.Context(spec, index, declared, port_offset, inventory)
        problems += [Problem(*pos.of_value(p), label(p), msg) for p, msg in rules.check(ctx)]
    if problems:
        raise SpecInvalid(filename, problems)
    return spec


def _validate(data: dict, pos: Positions, label, problems: list[Problem]) -> tuple[MeshSpec | None, list[int]]:
    """The spec, or when some services are invalid, the spec of the valid ones (for the rules)."""
    raw = data.get("services")
    try:
        spec = MeshSpec.model_validate(data)
        return spec, list(range(len(spec.services)))
    except ValidationError as err:
        # Keys YAML did not read as text were flagged already, where they stand.
        problems += [_problem(e, data, pos, label) for e in err.errors() if not _is_non_text_key(e)]
    if not isinstance(raw, list):
        return None, []
    index = [i for i, s in enumerate(raw) if _is_valid(Service, s)]
    try:
        return MeshSpec.model_validate({**data, "services": [raw[i] for i in index]}), index
    except ValidationError:
        return None, []


def _is_non_text_key(error: dict) -> bool:
    key_error = error["type"] == "invalid_key" or error["loc"][-1:] == ("[key]",)
    return key_error and not isinstance(error["input"], str)


def _is_valid(model: type[BaseModel], value: object) -> bool:
    try:
        model.model_validate(value)
        return True
    except ValidationError:
        return False


def _problem(error: dict, data: dict, pos: Positions, label) -> Problem:
    path = _data_path(error["loc"], data)
    kind, msg = error["type"], error["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        known = _fields_at(path[:-1])
        close = difflib.get_close_matches(str(path[-1]), known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return Problem(*pos.of_key(path), label(path), f"unknown key; {hint}valid keys: {', '.join(known)}")
    if kind == "missing":
        return Problem(*pos.of_value(path[:-1]), label(path), "missing required key")
    if error["loc"] and error["loc"][-1] == "[key]":
        return Problem(*pos.of_key(path), label(path), f"bad key: {msg}")
    if kind.endswith("_type") or kind.endswith("_parsing"):
        msg = f"{msg}, got {error['input']!r}"
    return Problem(*pos.of_value(path), label(path), msg)


def _data_path(loc: tuple, data: object) -> Path:
    """pydantic's loc as a path into the data; a missing key ends it."""
    path: list = []
    node = data
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(node, (dict, list)) and _has(node, part):
            node = node[part]
        elif not (isinstance(node, dict) and isinstance(part, str)):
            continue  # a schema tag of pydantic's, not a key of the file
        else:
            node = None
        path.append(part)
    return tuple(path)


def _fields_at(path: Path) -> list[str]:
    """The keys the model accepts at `path` (for 'did you mean')."""
    model: object = MeshSpec
    for part in path:
        model = _unwrap(model, part)
    return sorted(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _unwrap(tp: object, part: str | int) -> object:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(part) if isinstance(part, str) else None
        return _strip(field.annotation) if field else None
    origin = typing.get_origin(tp)
    if origin is list and isinstance(part, int):
        return _strip(typing.get_args(tp)[0])
    if origin is dict:
        return _strip(typing.get_args(tp)[1])
    return None


def _strip(tp: object) -> object:
    """X | None -> X; Annotated[X, ...] -> X."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            models = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = models[0] if len(models) == 1 else tp
            if len(models) != 1:
                return tp
        else:
            return tp


def _labeller(data: object):
    """Render a path as dotted keys, naming services by their name where they have one."""

    def label(path: Path) -> str:
        parts, node = [], data
        for part in path:
            child = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None
            if isinstance(part, int) and isinstance(child, dict) and isinstance(child.get("name"), str) and parts == ["services"]:
                parts.append(child["name"])
            else:
                parts.append(str(part))
            node = child
        return ".".join(parts) or "(file)"

    return label


def _has(node, part) -> bool:
    return part in node if isinstance(node, dict) else isinstance(part, int) and 0 <= part < len(node)
