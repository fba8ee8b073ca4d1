"""YAML (or JSON) text -> plain values, remembering the line and column of every node.

Safe by construction: PyYAML composes the node graph (no object is ever built from a tag), then this
module builds dicts, lists and scalars itself. Plain scalars follow the YAML 1.2 core schema, so the
YAML 1.1 surprises (``no`` -> False, ``0123`` -> 83, ``2026-11-25`` -> date) cannot happen, and the
text as written is kept so that ID lists use it verbatim.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from snapbatch.errors import ManifestError, Problem, echo

__all__ = ["MAX_ALIAS_NODES", "MAX_BYTES", "Document", "Path", "format_path", "load"]

Path = tuple[str | int, ...]

MAX_BYTES = 16 * 1024 * 1024
MAX_ALIAS_NODES = 100_000  # nodes built again through aliases; an alias bomb hits this within milliseconds

_PLAIN = "tag:snapbatch,2026:plain"
_MERGE = "tag:yaml.org,2002:merge"
_STR, _INT, _FLOAT, _BOOL, _NULL = (f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null"))
_INT_RE = re.compile(r"[-+]?[0-9]+")
_FLOAT_RE = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


class _Loader(yaml.SafeLoader):
    """A SafeLoader whose plain scalars keep a marker tag; this module resolves them itself."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0]:
            return _MERGE if value == "<<" else _PLAIN
        return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]


@dataclass
class Document:
    """The loaded values, where each node and each mapping key stands, and the raw text of plain scalars."""

    file: str
    value: Any = None
    marks: dict[Path, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[Path, tuple[int, int]] = field(default_factory=dict)
    raw: dict[Path, str] = field(default_factory=dict)  # plain (unquoted) scalars as written
    text: str = ""
    spans: dict[Path, tuple[int, int, str | None]] = field(default_factory=dict)  # scalars: start, end, style

    def mark_in(self, path: Path, offset: int) -> tuple[int | None, int | None]:
        """The line and column of the character at ``offset`` in the scalar value at ``path``: the value is
        aligned with its source text, skipping quotes, escapes, indentation and folded line breaks."""
        span = self.spans.get(path)
        if span is None:
            return self.mark(path)
        start, end, style = span
        src = self.text
        pos = start
        if style in ("|", ">"):  # the content starts on the line after the indicator
            pos = src.find("\n", start, end) + 1 or start
        value = self.value_at(path)
        if not isinstance(value, str):
            return self.mark(path)
        escapes = style == '"'
        for char in value[:offset]:
            pos = _advance(src, pos, end, char, escapes)[1]
        if offset < len(value):
            pos = _advance(src, pos, end, value[offset], escapes)[0]
        line = src.count("\n", 0, pos) + 1
        return line, pos - (src.rfind("\n", 0, pos) + 1) + 1

    def value_at(self, path: Path) -> Any:
        node: Any = self.value
        for part in path:
            if isinstance(node, dict):
                node = node.get(part)
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
            else:
                return None
        return node

    def mark(self, path: Path, *, key: bool = False) -> tuple[int | None, int | None]:
        """The line and column of ``path`` (its key when ``key``), or of its nearest located ancestor."""
        table = self.key_marks if key else self.marks
        if path in table:
            return table[path]
        while path:
            path = path[:-1]
            if path in self.marks:
                return self.marks[path]
        return (None, None)


_ESCAPED = {
    "0": "\0", "a": "\a", "b": "\b", "t": "\t", "\t": "\t", "n": "\n", "v": "\v", "f": "\f", "r": "\r",
    "e": "\x1b", " ": " ", '"': '"', "/": "/", "\\": "\\", "N": "\x85", "_": "\xa0", "L": "\u2028",
    "P": "\u2029",
}  # fmt: skip
_HEX_DIGITS = {"x": 2, "u": 4, "U": 8}


def _advance(src: str, pos: int, end: int, char: str, escapes: bool = False) -> tuple[int, int]:
    """Where the source text that yields ``char`` of the value starts and ends, at or after ``pos``. With
    ``escapes`` (a double-quoted scalar) an escape sequence is one character of the value, never its parts."""
    at = pos
    while at < end:
        found = src[at]
        if escapes and found == "\\" and at + 1 < end:
            kind = src[at + 1]
            if kind in "\r\n":  # an escaped line break yields nothing
                at += 2
                continue
            digits = _HEX_DIGITS.get(kind, 0)
            after = at + 2 + digits
            try:
                decoded = chr(int(src[at + 2 : after], 16)) if digits else _ESCAPED.get(kind)
            except ValueError:
                decoded = None
            if decoded == char:
                return at, after
            at = after
            continue
        if found == char or (char == " " and found == "\n"):
            return at, at + 1
        at += 1
    return pos, pos + 1


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "top level"


class _TooBig(Exception):
    pass


class _Builder:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.problems: list[Problem] = []
        self.built: set[int] = set()
        self.building: set[int] = set()
        self.alias_nodes = 0

    def problem(self, node: yaml.Node, path: Path, message: str) -> None:
        m = node.start_mark
        self.problems.append(Problem(self.doc.file, m.line + 1, m.column + 1, format_path(path), message))

    def build(self, node: yaml.Node, path: Path) -> Any:
        if id(node) in self.building:
            self.problem(node, path, "an alias refers to a node that contains it; recursive YAML is not allowed")
            return None
        if id(node) in self.built:
            self.alias_nodes += 1
            if self.alias_nodes > MAX_ALIAS_NODES:
                raise _TooBig
        m = node.start_mark
        self.doc.marks[path] = (m.line + 1, m.column + 1)
        if isinstance(node, yaml.ScalarNode):
            self.built.add(id(node))
            return self.scalar(node, path)
        self.building.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                if node.tag != "tag:yaml.org,2002:seq":
                    self.problem(node, path, f"the YAML tag {echo(node.tag)[1:-1]} is not allowed; remove it")
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            if isinstance(node, yaml.MappingNode):
                if node.tag != "tag:yaml.org,2002:map":
                    self.problem(node, path, f"the YAML tag {echo(node.tag)[1:-1]} is not allowed; remove it")
                return self.mapping(node, path)
        finally:
            self.building.discard(id(node))
            self.built.add(id(node))
        raise AssertionError(f"unknown YAML node {node!r}")

    def mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        # Merged values first, so that the mapping's own keys (which win) also own the recorded marks.
        merged: dict[str, Any] = {}
        own_mark = self.doc.marks[path]
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag == _MERGE:
                for key, value in self.merge_sources(value_node, path):
                    merged.setdefault(key, value)
        self.doc.marks[path] = own_mark
        own: dict[str, Any] = {}
        first_seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag == _MERGE:
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_node, path, "a mapping key must be plain text, not a list or mapping")
                continue
            key = key_node.value
            if key in first_seen:
                self.problem(
                    key_node,
                    (*path, key),
                    f"duplicate key {echo(key)} (first at line {first_seen[key]}); keep one of them",
                )
                continue
            first_seen[key] = key_node.start_mark.line + 1
            km = key_node.start_mark
            self.doc.key_marks[(*path, key)] = (km.line + 1, km.column + 1)
            own[key] = self.build(value_node, (*path, key))
        for key, value in merged.items():
            own.setdefault(key, value)
        return own

    def merge_sources(self, node: yaml.Node, path: Path) -> list[tuple[str, Any]]:
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        pairs: list[tuple[str, Any]] = []
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                self.problem(source, path, "a merge key (<<) takes a mapping or a list of mappings")
                continue
            pairs.extend(self.build(source, path).items())
        return pairs

    def scalar(self, node: yaml.ScalarNode, path: Path) -> Any:
        text = node.value
        self.doc.spans[path] = (node.start_mark.index, node.end_mark.index, node.style)
        if node.tag == _PLAIN:
            self.doc.raw[path] = text
            return _resolve_plain(text)
        if node.tag == _STR:
            return text
        if node.tag in (_INT, _FLOAT, _BOOL, _NULL):
            return _resolve_plain(text)
        self.problem(
            node, path, f"the YAML tag {echo(node.tag)[1:-1]} is not allowed here; remove it (snapbatch runs no code)"
        )
        return None


def _resolve_plain(text: str) -> Any:
    if text in ("", "~", "null", "Null", "NULL"):
        return None
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if len(text) <= 30:  # longer numbers stay text; the schema then says what it wanted
        if _INT_RE.fullmatch(text):
            return int(text)
        if _FLOAT_RE.fullmatch(text):
            return float(text)
    return text


def load(data: bytes, file: str) -> Document:
    """Parse one YAML or JSON document; raise ManifestError listing what is wrong, never anything else."""
    doc = Document(file)

    def fail(message: str, line: int | None = None, col: int | None = None) -> ManifestError:
        return ManifestError([Problem(file, line, col, "", message)])

    if len(data) > MAX_BYTES:
        raise fail(
            f"the manifest is {len(data)} bytes, over the {MAX_BYTES} byte limit; "
            "put long ID lists in a file and name it with {file: PATH}"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise fail("the file is not UTF-8 text; save it as UTF-8", line, 1) from None
    try:
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        context = exc.context
        if context and exc.context_mark and exc.problem_mark and exc.context_mark.line != exc.problem_mark.line:
            context += f" (which starts at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
        what = " ".join(filter(None, [context, exc.problem])) or "not valid YAML"
        if "expected a single document" in what:
            what = "the file holds more than one YAML document (---); keep one"
        if mark is None:
            raise fail(f"YAML syntax: {what}") from None
        raise fail(f"YAML syntax: {what}", mark.line + 1, mark.column + 1) from None
    except yaml.reader.ReaderError as exc:
        before = text[: exc.position]
        line, col = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        raise fail(f"character {exc.character!r} is not allowed in YAML; remove it", line, col) from None
    except yaml.YAMLError as exc:
        raise fail(f"YAML syntax: {exc}") from None
    except RecursionError:
        raise fail("the YAML is nested too deeply to be a manifest") from None
    if root is None:
        raise fail("the manifest is empty; start from jobs.example.yaml", 1, 1)
    doc.text = text
    builder = _Builder(doc)
    try:
        doc.value = builder.build(root, ())
    except _TooBig:
        raise fail(
            f"aliases expand to more than {MAX_ALIAS_NODES} nodes (an alias bomb?); write the values out instead"
        ) from None
    except RecursionError:
        raise fail("the YAML is nested too deeply to be a manifest") from None
    if builder.problems:
        raise ManifestError(builder.problems)
    return doc
