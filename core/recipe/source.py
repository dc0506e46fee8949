"""A recipe file read safely into plain values, each with the line and column it came from.

PyYAML never builds Python objects here: the loader composes the node tree (which keeps line and
column marks) and converts it itself, so an unsafe tag is reported instead of executed and every
problem can name its line. A recipe is a small hand-written file, so anything far beyond that
(size, nesting, aliases expanded) is a mistake or an attack, and is refused with a limit.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

import yaml

from core.recipe.problems import BAD, Bad, Problem, RecipeError, Trail, describe, show
from core.recipe.recipefile import MAX_DEPTH, MAX_NODES, Loc, Source, decode

_LOC_DEPTH = 6  # locations are recorded this deep: enough for steps[i].ready.port, not for data
_YAML = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(
    _YAML + t for t in ("null", "bool", "int", "float", "binary", "timestamp", "str")
)
_MERGE_TAG = _YAML + "merge"
#: the line breaks YAML 1.1 counts (NEL and U+2028 too, not str.splitlines' form feed)
_YAML_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
#: a line that begins a block list item (``- x`` or a lone ``-``; not the ``---`` marker)
_ITEM = re.compile(r"( *)-(?:[ \t]|$)")
#: the name a flow-style item gives first: ``- {name: X, ...`` (X plain or quoted)
_FLOW_NAME = re.compile(r"""\{\s*name:\s*('(?:[^']|'')*'|"(?:[^"\\]|\\.)*"|[^,}]*)""")
_STR_TAG, _SEQ_TAG, _MAP_TAG = _YAML + "str", _YAML + "seq", _YAML + "map"


def _short_tag(tag: str | None) -> str:
    tag = tag or "?"
    return "!!" + tag[len(_YAML) :] if tag.startswith(_YAML) else tag


class _TooLarge(Exception):
    """The node budget ran out: give up on the document instead of building it."""


def _mark(node: yaml.Node) -> Loc:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def _plain_text(node: yaml.Node) -> str | None:
    """The text of a plain ASCII string scalar (nothing to check in it), else None."""
    if node.tag == _STR_TAG and isinstance(node, yaml.ScalarNode) and node.value.isascii():
        return node.value
    return None


def _is_merge(key: yaml.Node) -> bool:
    return isinstance(key, yaml.ScalarNode) and key.tag == _MERGE_TAG


class _Converter:
    """Builds plain values from a node tree without recursion and without trusting any tag.

    Aliases are expanded (each use gets its own copy and path) but every value built counts
    against ``MAX_NODES``; recursive anchors end at ``MAX_DEPTH``.

    Most of a recipe is plain ASCII text in mappings (``name: build``): with ``shortcut`` such
    a value is built with its key instead of through the stack, which orders the count
    differently, so where the budget runs out is found again without it (``parse``).
    """

    def __init__(self, *, shortcut: bool = True) -> None:
        self.shortcut = shortcut
        self.locs: dict[Trail, Loc] = {}
        self.key_locs: dict[Trail, Loc] = {}
        self.issues: dict[tuple[str, Loc], Trail] = {}  # deduplicated: aliases repeat nodes
        self.count = 0
        self._ctor = yaml.constructor.SafeConstructor()
        self._flat: dict[int, list[tuple[yaml.Node, yaml.Node]]] = {}
        self._busy: set[int] = set()

    def issue(self, message: str, trail: Trail, loc: Loc) -> None:
        self.issues.setdefault((message, loc), trail)

    def convert(self, root: yaml.Node) -> Any:
        box: list[Any] = [None]
        stack: list[tuple[yaml.Node, Trail, Any, Any]] = [(root, (), box, 0)]
        while stack:
            node, trail, holder, slot = stack.pop()
            holder[slot] = self._value(node, trail, stack)
        return box[0]

    def _tick(self, node: yaml.Node, trail: Trail, amount: int = 1) -> None:
        self.count += amount
        if self.count > MAX_NODES:
            self.issue(
                f"recipe too large: more than {MAX_NODES:,} values once aliases are expanded",
                trail,
                _mark(node),
            )
            raise _TooLarge

    def _value(self, node: yaml.Node, trail: Trail, stack: list[Any]) -> Any:
        self._tick(node, trail)
        depth = len(trail)
        if depth <= _LOC_DEPTH:
            self.locs[trail] = _mark(node)
        if depth > MAX_DEPTH:
            self.issue(f"nested more than {MAX_DEPTH} levels deep", trail, _mark(node))
            return BAD
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, trail)
        if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ_TAG:
            items: list[Any] = [None] * len(node.value)
            for i in reversed(range(len(node.value))):
                stack.append((node.value[i], trail + (i,), items, i))
            return items
        if isinstance(node, yaml.MappingNode) and node.tag == _MAP_TAG:
            return self._mapping(node, trail, stack)
        return self._bad_tag(node, trail)

    def _bad_tag(self, node: yaml.Node, trail: Trail) -> Bad:
        self.issue(
            f"YAML tag '{_short_tag(node.tag)}' is not allowed: a recipe holds plain data "
            "(text, numbers, booleans, null, lists and mappings)",
            trail,
            _mark(node),
        )
        return BAD

    def _scalar(self, node: yaml.ScalarNode, trail: Trail) -> Any:
        tag = node.tag
        if tag == _STR_TAG:  # most of a recipe: what SafeConstructor would return, directly
            value = node.value
        elif tag == _MERGE_TAG:  # a lone "<<" outside a key is just text
            return node.value
        elif tag not in _SCALAR_TAGS:
            return self._bad_tag(node, trail)
        else:
            try:
                value = self._ctor.yaml_constructors[tag](self._ctor, node)
            except Exception as exc:
                self.issue(
                    f"invalid {_short_tag(tag)} value {show(node.value)}: {describe(exc)}",
                    trail,
                    _mark(node),
                )
                return BAD
        if isinstance(value, str) and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                self.issue("text holds an invalid unicode character", trail, _mark(node))
                return BAD
        return value

    def _mapping(self, node: yaml.MappingNode, trail: Trail, stack: list[Any]) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        first: dict[Any, Loc] = {}
        todo: list[tuple[yaml.Node, Trail, Any, Any]] = []
        shortcut = self.shortcut and len(trail) < MAX_DEPTH
        for key_node, value_node, merged in self._pairs(node, trail):
            self._tick(key_node, trail)
            key = _plain_text(key_node)
            if key is None:
                key = self._key(key_node, trail)
            if key is BAD:
                continue
            if key in out:
                if not merged:  # explicit keys beat merged ones; two explicit ones are an error
                    self.issue(
                        f"duplicate key {show(key)} (first at line {first[key][0]})",
                        trail + (key,),
                        _mark(key_node),
                    )
                continue
            out[key] = None
            first[key] = mark = _mark(key_node)
            here = trail + (key,)
            if len(trail) < _LOC_DEPTH:
                self.key_locs[here] = mark
            text = _plain_text(value_node) if shortcut else None
            if text is None:
                todo.append((value_node, here, out, key))
                continue
            self._tick(value_node, here)
            if len(trail) < _LOC_DEPTH:
                self.locs[here] = _mark(value_node)
            out[key] = text
        stack.extend(reversed(todo))
        return out

    def _key(self, node: yaml.Node, trail: Trail) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            self.issue(
                "mapping keys must be plain values, not lists or mappings", trail, _mark(node)
            )
            return BAD
        return self._scalar(node, trail)

    def _pairs(
        self, node: yaml.MappingNode, trail: Trail
    ) -> list[tuple[yaml.Node, yaml.Node, bool]]:
        """The mapping's own pairs (duplicates kept, to be reported), then merged-in ones."""
        if all(k.tag != _MERGE_TAG for k, _ in node.value):  # no merge: the common case
            return [(k, v, False) for k, v in node.value]
        pairs = [(k, v, False) for k, v in node.value if not _is_merge(k)]
        for k, v in node.value:
            if _is_merge(k):
                for source in self._merge_sources(k, v, trail):
                    pairs.extend((mk, mv, True) for mk, mv in self._flatten(source, trail, 0))
        return pairs

    def _merge_sources(self, key: yaml.Node, value: yaml.Node, trail: Trail) -> list[yaml.Node]:
        def is_map(n: yaml.Node) -> bool:
            return isinstance(n, yaml.MappingNode) and n.tag == _MAP_TAG

        if is_map(value):
            return [value]
        if isinstance(value, yaml.SequenceNode) and all(is_map(n) for n in value.value):
            return list(value.value)
        self.issue("'<<' (merge) needs a mapping or a list of mappings", trail, _mark(key))
        return []

    def _flatten(
        self, node: yaml.MappingNode, trail: Trail, depth: int
    ) -> list[tuple[yaml.Node, yaml.Node]]:
        """A merge source's pairs, its own merges included, first key wins; memoised per node
        so merging the same anchor many times costs nothing extra."""
        cached = self._flat.get(id(node))
        if cached is not None:
            return cached
        if depth > MAX_DEPTH or id(node) in self._busy:
            self.issue("'<<' (merge) chain is recursive or too deep", trail, _mark(node))
            return []
        self._busy.add(id(node))
        seen: set[Any] = set()
        out: list[tuple[yaml.Node, yaml.Node]] = []
        own = [(k, v) for k, v in node.value if not _is_merge(k)]
        merged = [
            pair
            for k, v in node.value
            if _is_merge(k)
            for source in self._merge_sources(k, v, trail)
            for pair in self._flatten(source, trail, depth + 1)
        ]
        for k, v in own + merged:
            raw = (k.tag, k.value) if isinstance(k, yaml.ScalarNode) else id(k)
            if raw not in seen:
                seen.add(raw)
                out.append((k, v))
        self._busy.discard(id(node))
        self._flat[id(node)] = out
        self._tick(node, trail, len(out))
        return out


def _loader() -> type:
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _TooDeep(Exception):
    def __init__(self, mark: Any) -> None:
        super().__init__("too deep")
        self.mark = mark


def _compose(text: str) -> yaml.Node | None:
    """The node tree, refused past ``MAX_DEPTH`` levels at the first collection that is too deep.

    The pure-Python composer recurses per level and would hit the recursion limit on
    ``[[[[...]]]]``, so without libyaml an event pass checks the depth first. libyaml composes in
    C and refuses nesting past 1,000 itself: the tree is composed first and its depth checked
    after, a walk over the collections only (the event pass cost as much as composing). On a
    YAML error the event pass runs then, so that a document both too deep and broken further
    on is still refused as too deep, as before.
    """
    loader = _loader()
    if loader is yaml.SafeLoader:
        _check_depth_events(text, loader)
        return yaml.compose(text, Loader=loader)
    try:
        root = yaml.compose(text, Loader=loader)
    except yaml.YAMLError:
        _check_depth_events(text, loader)
        raise
    if isinstance(root, (yaml.SequenceNode, yaml.MappingNode)):
        _check_depth_nodes(root)
    return root


def _check_depth_events(text: str, loader: type) -> None:
    """The depth check on the parser's events, before or without a tree: nothing recurses."""
    depth = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.events.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _TooDeep(event.start_mark)
        elif isinstance(event, yaml.events.CollectionEndEvent):
            depth -= 1


def _check_depth_nodes(root: yaml.Node) -> None:
    """The event pass's check on a composed tree: depth first, in document order, each node
    entered once only. An alias is the node its anchor made, met again later (or inside itself,
    for a recursive anchor), so the first meeting is where the text has it, at its text depth;
    scalars nest nothing and are not entered."""
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if depth > MAX_DEPTH:
            raise _TooDeep(node.start_mark)
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = node.value
        stack.extend(
            (child, depth + 1)
            for child in reversed(children)
            if not isinstance(child, yaml.ScalarNode)
        )


def _step_above(lines: list[str], line: int) -> str | None:
    """The name of the step a YAML syntax error is in, as best the text says without a parse:
    that of the step item 0-based ``line`` is in; None if there is none or it has no plain
    name (a step above is never named: a wrong step misleads more than none)."""
    item = _item_above(lines, min(line, len(lines) - 1))
    return None if item is None else _item_name(lines, item)


def _steps_start(lines: list[str], line: int) -> int | None:
    """Where the list of steps 0-based ``line`` is in begins: below the top-level ``steps:``
    or the document's start; None below any other top-level key (ctx:, env:, ...)."""
    for index in range(line, -1, -1):
        text = lines[index]
        if text.startswith("---"):
            return index + 1
        if text[:1].strip() and text[0] not in "-#":
            return index + 1 if text.partition(":")[0].strip() == "steps" else None
    return 0


def _item_above(lines: list[str], line: int) -> int | None:
    """The index of the step item 0-based ``line`` is in: the nearest line at or above it that
    begins an item at the steps' indentation (that of the list's first item), so an item
    whose first key is not ``name:`` stops the walk instead of being passed for the one above."""
    start = _steps_start(lines, line)
    if start is None:
        return None
    indents = [len(m[1]) for m in map(_ITEM.match, lines[start : line + 1]) if m]
    if not indents:
        return None
    for index in range(line, start - 1, -1):
        match = _ITEM.match(lines[index])
        if match and len(match[1]) == indents[0]:
            return index
    return None


def _item_name(lines: list[str], item: int) -> str | None:
    """The name step item ``item`` (a line index) gives: ``- name: X``, ``- {name: X, ...``
    or a ``name: X`` line among the item's keys below it."""
    head = lines[item]
    dash = head.index("-")
    rest = head[dash + 1 :].strip()
    if rest.startswith("{"):
        match = _FLOW_NAME.match(rest)
        return _plain_name(match[1]) if match else None
    if rest.startswith("name:"):
        return _plain_name(rest[len("name:") :])
    column = len(head) - len(head[dash + 1 :].lstrip()) if rest else dash + 2
    for text in lines[item + 1 :]:
        indent = len(text) - len(text.lstrip(" "))
        if text.strip() and not text.lstrip().startswith("#") and indent <= dash:
            return None  # the item ends: it has no name line
        if indent == column and text[column:].startswith("name:"):
            return _plain_name(text[column + len("name:") :])
    return None


def _plain_name(value: str) -> str | None:
    """``value`` (the text after ``name:``) as a step name if it is plain text."""
    with contextlib.suppress(yaml.YAMLError):
        name = yaml.safe_load(value)
        return name if isinstance(name, str) and name else None
    return None


#: The YAML errors whose context is an opener (a quote, ``[``, ``{``): one left open is to be
#: fixed where it opens, not where the parser gave up, which may be many steps on (at the end of
#: the file, for a quote). Their words for it, and ours.
_OPENERS = {
    "while scanning a quoted scalar": "the quoted text that starts here does not end",
    "while parsing a flow sequence": "the list ('[') that starts here does not end",
    "while parsing a flow mapping": "the mapping ('{') that starts here does not end",
}


def _left_open(text: str, exc: yaml.YAMLError) -> bool:
    """Whether ``exc`` is a quote, ``[`` or ``{`` left open: the parser went on to the end of the
    file, or past the end of the step it opens in. A mistake inside the step it opens in (an
    unknown escape, ``[a: b: c]``) is where the parser says it is."""
    if not isinstance(exc, yaml.MarkedYAMLError) or not exc.problem:
        return False
    opened, stopped = exc.context_mark, exc.problem_mark
    if exc.context not in _OPENERS or opened is None or stopped is None:
        return False
    if opened.line == stopped.line:
        return False
    lines = _YAML_BREAK.split(text)
    rest = lines[stopped.line][stopped.column :] if stopped.line < len(lines) else ""
    if not "".join([rest, *lines[stopped.line + 1 :]]).strip():
        return True  # it stopped at the end of the file (a mark counts characters, not bytes)
    return _item_above(lines, opened.line) != _item_above(lines, stopped.line)


def _yaml_problem(file: str, text: str, exc: yaml.YAMLError) -> Problem:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if _left_open(text, exc):
        # located where it opens, in the step it opens in; where the parser stopped is said
        message = (
            f"invalid YAML: {_OPENERS[exc.context]}: {exc.problem} "
            f"(line {mark.line + 1}, column {mark.column + 1})"
        )
        mark = exc.context_mark  # type: ignore[attr-defined]
    elif isinstance(exc, yaml.MarkedYAMLError):
        message = f"invalid YAML: {exc.problem or exc.context or 'syntax error'}"
        if exc.problem and exc.context:
            message += f" ({exc.context})"
    else:
        message = f"invalid YAML: {describe(exc).split(': ', 1)[-1]}"
    if mark is not None:
        lines = _YAML_BREAK.split(text)
        row = lines[mark.line] if mark.line < len(lines) else ""
        if row[mark.column : mark.column + 1] == "\t":
            # libyaml's words for a tab ("cannot start any token") do not say what is wrong
            message = "invalid YAML: a tab character; YAML indents with spaces only"
        step = _step_above(lines, mark.line)
        return Problem(file, mark.line + 1, mark.column + 1, step, message)
    position = getattr(exc, "position", None)  # ReaderError: an offset into the text
    if isinstance(position, int) and _loader() is not yaml.SafeLoader:
        # libyaml counts bytes of the UTF-8 encoding, the Python reader characters
        position = len(text.encode("utf-8")[:position].decode("utf-8", "ignore"))
    if isinstance(position, int) and 0 <= position <= len(text):
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        return Problem(file, line, column, None, message)
    return Problem(file, None, None, None, message)


def parse(absolute: Path, shown: str, data: bytes) -> Source:
    """Convert a recipe file's bytes (``data``, read by ``recipefile.read_bytes``); a problem
    with the file as a whole (not UTF-8, not YAML, too deep, too large, empty) is raised at
    once as a RecipeError."""
    text = decode(data, shown)
    try:
        root = _compose(text)
    except _TooDeep as exc:
        line, column = exc.mark.line + 1, exc.mark.column + 1
        message = f"nested more than {MAX_DEPTH} levels deep"
        raise RecipeError([Problem(shown, line, column, None, message)]) from None
    except yaml.YAMLError as exc:
        raise RecipeError([_yaml_problem(shown, text, exc)]) from None
    if root is None:
        raise RecipeError([Problem(shown, None, None, None, "the recipe is empty")])
    conv = _Converter()
    try:
        doc = conv.convert(root)
    except _TooLarge:
        conv = _Converter(shortcut=False)  # node by node, to say where the budget ran out
        with contextlib.suppress(_TooLarge):
            conv.convert(root)
        problems = [Problem(shown, *loc, None, message) for message, loc in conv.issues]
        raise RecipeError(problems) from None
    return Source(absolute, shown, doc, conv.locs, conv.key_locs, conv.issues)
