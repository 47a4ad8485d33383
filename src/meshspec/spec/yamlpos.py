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
#: libyaml parses several times faster than PyYAML's pure Python and bounds nesting depth itself
#: (PyYAML recurses and raises RecursionError); PyYAML remains for a yaml built without libyaml.
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: Bounds that keep a hostile or mistaken file from taking the machine: far above any real spec.
MAX_CHARACTERS = 4 * 1024 * 1024
MAX_VALUES = 200_000


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _walk(root: yaml.Node, pos: Positions, findings: list[Finding]) -> None:
    """Record where every key and value is, and flag keys YAML does not read as text and duplicates.
    Iterative (a file may nest as deep as libyaml allows) and each node once: an alias repeats a node
    YAML already walked, so its values are located where the anchor is."""
    walked: set[int] = set()
    todo: list[tuple[yaml.Node, Path]] = [(root, ())]
    while todo:
        node, path = todo.pop()
        pos.values[path] = _mark(node)
        if id(node) in walked:
            continue
        walked.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen: dict[object, yaml.Node] = {}
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
                child = path + (key,)
                if key_node.tag != _STR_TAG:
                    # YAML 1.1 reads on/off/yes/no as booleans and digits as numbers.
                    findings.append((child, _mark(key_node), f"key {_shown(key)} is not read as text by YAML; quote it"))
                    continue
                if key in seen:
                    first = seen[key].start_mark.line + 1
                    findings.append((child, _mark(key_node), f"duplicate key (first given on line {first})"))
                    continue
                seen[key] = key_node
                pos.keys[child] = _mark(key_node)
                todo.append((value_node, child))
        elif isinstance(node, yaml.SequenceNode):
            todo += [(item, path + (i,)) for i, item in enumerate(node.value)]


def _shown(key: object, limit: int = 40) -> str:
    text = repr(key)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _graph_problem(root: yaml.Node) -> tuple[tuple[int, int], str] | None:
    """An alias inside its own anchor (a recursive structure), or aliases that expand the document
    past MAX_VALUES (a few lines can stand for billions of values): where, and what."""
    size: dict[int, int] = {}  # node id -> values it expands to, once known
    on_path: set[int] = set()
    todo: list[tuple[yaml.Node, bool]] = [(root, False)]
    while todo:
        node, children_done = todo.pop()
        if children_done:
            on_path.discard(id(node))
            size[id(node)] = 1 + sum(size[id(c)] for c in _children(node))
            if size[id(node)] > MAX_VALUES:
                return _mark(node), (f"aliases expand the spec to more than {MAX_VALUES:,} values;"
                                     " write the values out or use fewer aliases")
            continue
        if id(node) in size:
            continue
        on_path.add(id(node))
        todo.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                return _mark(child), "an alias refers to a node that contains it (a recursive structure)"
            if id(child) not in size:
                todo.append((child, False))
    return None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _unconstructible(root: yaml.Node, err: Exception) -> tuple[tuple[int, int], str]:
    """Where the scalar is that YAML parsed but Python cannot hold (a 5,000-digit integer, a
    timestamp with month 13): each scalar is constructed alone until one fails."""
    todo = [root]
    while todo:
        node = todo.pop()
        if isinstance(node, yaml.ScalarNode):
            alone = Loader("")  # the failed construction left `loader` mid-document
            try:
                alone.construct_object(node)
            except Exception as found:  # noqa: BLE001 -- whatever the construction above raised
                tag = node.tag.replace("tag:yaml.org,2002:", "!!")
                return _mark(node), f"YAML value cannot be read: {node.value[:40]!r} as {tag}: {_one_line(found)}"
            finally:
                alone.dispose()
        todo += _children(node)
    return (1, 1), f"YAML value cannot be read: {_one_line(err)}"


def _one_line(err: BaseException, limit: int = 160) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _syntax_message(err: yaml.MarkedYAMLError, text: str) -> str:
    """The parser's message, with a plain-words hint for the usual causes."""
    message = f"YAML syntax: {err.problem or err.context}"
    mark = err.problem_mark
    if mark is not None and "\t" in _line(text, mark.line)[: mark.column + 1]:
        message += " (YAML indents with spaces, not tabs)"
    elif "expected <block end>" in message:
        message += " (inconsistent indentation?)"
    ctx = err.context_mark
    if err.context and ctx and err.problem_mark and ctx.line != err.problem_mark.line:
        message += f" ({err.context} at line {ctx.line + 1} col {ctx.column + 1})"
    return message


def _line(text: str, index: int) -> str:
    lines = text.splitlines()
    return lines[index] if 0 <= index < len(lines) else ""


def _at(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset."""
    offset = max(0, min(offset, len(text)))
    return text.count("\n", 0, offset) + 1, offset - (text.rfind("\n", 0, offset) + 1) + 1


def load_with_positions(text: str) -> tuple[object, Positions, list[Finding]]:
    """Parse `text`; every problem comes back as a finding with its line and column, never as an
    exception: syntax, characters YAML refuses, nesting deeper than libyaml reads, recursive or
    exploding aliases, values Python cannot hold, duplicate keys, a file too large to be a spec."""
    pos = Positions()
    if len(text) > MAX_CHARACTERS:
        return None, pos, [((), (1, 1), f"the spec has {len(text):,} characters; meshspec reads specs of at most"
                                        f" {MAX_CHARACTERS:,}")]
    findings: list[Finding] = []
    try:
        loader = Loader(text)
    except UnicodeEncodeError as err:  # a lone surrogate, in text that did not come from a UTF-8 file
        return None, pos, [((), _at(text, err.start), f"YAML syntax: character U+{ord(text[err.start]):04X} is not Unicode text")]
    try:
        node = loader.get_single_node()
        if node is None:
            return None, pos, [((), (1, 1), "the spec is empty")]
        if problem := _graph_problem(node):
            return None, pos, [((), *problem)]
        _walk(node, pos, findings)
        try:
            data = loader.construct_document(node)
        except yaml.MarkedYAMLError:
            raise
        except Exception as err:  # noqa: BLE001 -- a scalar YAML parsed but Python cannot hold; PyYAML's
            # constructors raise whatever their parsing hits (ValueError, OverflowError, and for an
            # explicit tag on a malformed scalar, `!!int ''` or `!!timestamp '1:'`, IndexError or
            # AttributeError): every one of them is a value in the file, and is reported there.
            return None, pos, [((), *_unconstructible(node, err))]
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return None, pos, [((), (line, col), _syntax_message(err, text))]
    except yaml.reader.ReaderError as err:  # a control character, a NUL, a lone surrogate
        code = ord(err.character) if isinstance(err.character, str) else err.character
        return None, pos, [((), _at(text, err.position), f"YAML syntax: character U+{code:04X} is not allowed in YAML"
                                                          " (write control characters as escapes in double quotes)")]
    except yaml.YAMLError as err:
        return None, pos, [((), (1, 1), f"YAML syntax: {_one_line(err)}")]
    finally:
        loader.dispose()
    return data, pos, findings
