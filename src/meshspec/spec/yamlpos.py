"""YAML -> plain data plus the line/column of every key and value (1-based)."""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from meshspec.spec.problems import Path

# A finding before labels exist: where, at which key path, and what.
Finding = tuple[Path, tuple[int, int], str]


@dataclass
class Positions:
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def of_value(self, path: Path) -> tuple[int, int]:
        """Where the value at `path` starts, or its nearest ancestor when it is absent."""
        for n in range(len(path), -1, -1):
            if path[:n] in self.values:
                return self.values[path[:n]]
        return (1, 1)

    def of_key(self, path: Path) -> tuple[int, int]:
        return self.keys.get(path) or self.of_value(path)


_STR_TAG = "tag:yaml.org,2002:str"


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _walk(node: yaml.Node, path: Path, pos: Positions, findings: list[Finding]) -> None:
    pos.values[path] = _mark(node)
    if isinstance(node, yaml.MappingNode):
        seen: dict[object, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            child = path + (key,)
            if key_node.tag != _STR_TAG:
                # YAML 1.1 reads on/off/yes/no as booleans and digits as numbers.
                findings.append((child, _mark(key_node), f"key {key!r} is not read as text by YAML; quote it"))
                continue
            if key in seen:
                first = seen[key].start_mark.line + 1
                findings.append((child, _mark(key_node), f"duplicate key (first given on line {first})"))
                continue
            seen[key] = key_node
            pos.keys[child] = _mark(key_node)
            _walk(value_node, child, pos, findings)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, path + (i,), pos, findings)


def _syntax_message(err: yaml.MarkedYAMLError) -> str:
    """PyYAML's message, with a plain-words hint for the usual causes."""
    message = f"YAML syntax: {err.problem or err.context}"
    if "'\\t'" in message:
        message += " (YAML indents with spaces, not tabs)"
    elif "expected <block end>" in message:
        message += " (inconsistent indentation?)"
    ctx = err.context_mark
    if err.context and ctx and err.problem_mark and ctx.line != err.problem_mark.line:
        message += f" ({err.context} at line {ctx.line + 1} col {ctx.column + 1})"
    return message


def load_with_positions(text: str) -> tuple[object, Positions, list[Finding]]:
    """Parse `text`; syntax errors and duplicate keys come back as findings, never as exceptions."""
    pos = Positions()
    findings: list[Finding] = []
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, pos, [((), (1, 1), "the spec is empty")]
        _walk(node, (), pos, findings)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return None, pos, [((), (line, col), _syntax_message(err))]
    finally:
        loader.dispose()
    return data, pos, findings
