"""The step graph: who waits for whom, cycles, and the graph as dot or mermaid text.

Kept free of the recipe model's details (it takes plain ``name -> dependencies`` mappings) so
the loader can use it to name a cycle before any Step object exists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence


def find_cycle(deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """Return one cycle as ``[a, b, ..., a]`` (each waits for the next), or None.

    Iterative DFS so a chain of thousands of steps cannot hit the recursion limit. Unknown
    dependency names are ignored here: the loader reports them separately.
    """
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(deps, white)
    for root in deps:
        if colour[root] != white:
            continue
        path: list[str] = [root]
        stack: list[Iterable[str]] = [iter(deps[root])]
        colour[root] = grey
        while stack:
            child = next(stack[-1], None)
            if child is None:
                stack.pop()
                colour[path.pop()] = black
                continue
            state = colour.get(child)
            if state is None or state == black:
                continue
            if state == grey:
                return path[path.index(child) :] + [child]
            colour[child] = grey
            path.append(child)
            stack.append(iter(deps[child]))
    return None


def dependents_of(deps: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Invert ``deps``: for each step, the steps that wait for it (in recipe order)."""
    out: dict[str, list[str]] = {name: [] for name in deps}
    for name, parents in deps.items():
        for parent in parents:
            if parent in out:
                out[parent].append(name)
    return out


def topological_order(deps: Mapping[str, Sequence[str]]) -> list[str]:
    """Steps in an order where each comes after its dependencies, recipe order where free.

    Steps in a cycle (the loader refuses those) come last, so the order is always complete.
    """
    order: list[str] = []
    placed: set[str] = set()
    remaining = list(deps)
    while remaining:
        rest = []
        for name in remaining:
            if all(d in placed for d in deps[name]):
                order.append(name)
                placed.add(name)
            else:
                rest.append(name)
        if len(rest) == len(remaining):
            order.extend(rest)
            break
        remaining = rest
    return order


def _dot_id(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(deps: Mapping[str, Sequence[str]], *, labels: Mapping[str, str] | None = None) -> str:
    """Graphviz text; ``labels`` adds a second line (the step type) under each name."""
    lines = ["digraph recipe {", "  rankdir=LR;", "  node [shape=box, style=rounded];"]
    for name in deps:
        label = _dot_id(name)[1:-1]  # escaped as in the id: a backslash in a name is text
        if labels and name in labels:
            label += f"\\n{labels[name]}"
        lines.append(f'  {_dot_id(name)} [label="{label}"];')
    for name, parents in deps.items():
        for parent in parents:
            lines.append(f"  {_dot_id(parent)} -> {_dot_id(name)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


#: what Mermaid would read in a label as markup (HTML: ``<b>``) or an entity (``#35;``, ``&amp;``)
_MERMAID_ESCAPES = str.maketrans(
    {"#": "#35;", "&": "#38;", '"': "#quot;", "<": "#lt;", ">": "#gt;"}
)


def _mermaid_text(text: str) -> str:
    """A step name shown as written: Mermaid labels take HTML and ``#code;`` entities."""
    return text.translate(_MERMAID_ESCAPES)


def to_mermaid(
    deps: Mapping[str, Sequence[str]], *, labels: Mapping[str, str] | None = None
) -> str:
    """Mermaid flowchart text; node ids are positional because step names may hold dashes."""
    ids = {name: f"s{i}" for i, name in enumerate(deps)}
    lines = ["flowchart LR"]
    for name, node in ids.items():
        text = _mermaid_text(name)
        if labels and name in labels:
            text += f"<br/>{_mermaid_text(labels[name])}"
        lines.append(f'  {node}["{text}"]')
    for name, parents in deps.items():
        for parent in parents:
            if parent in ids:
                lines.append(f"  {ids[parent]} --> {ids[name]}")
    return "\n".join(lines) + "\n"
