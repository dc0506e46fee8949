from __future__ import annotations

from core.graph import find_cycle, to_dot, to_mermaid

DEPS = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": []}


def test_no_cycle_in_a_dag():
    assert find_cycle(DEPS) is None


def test_cycle_is_named_in_order():
    cycle = find_cycle({"a": ["c"], "b": ["a"], "c": ["b"], "x": []})
    assert cycle is not None and cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}


def test_self_dependency_is_a_cycle():
    assert find_cycle({"a": ["a"]}) == ["a", "a"]


def test_long_chain_does_not_hit_the_recursion_limit():
    deps = {f"s{i}": [f"s{i - 1}"] if i else [] for i in range(20000)}
    assert find_cycle(deps) is None


def test_dot_and_mermaid_show_every_edge():
    dot = to_dot(DEPS)
    assert '"a" -> "b";' in dot and '"c" -> "d";' in dot
    mermaid = to_mermaid({"x-1": [], 'y"2': ["x-1"]})
    assert mermaid.startswith("flowchart LR")
    assert "s0 --> s1" in mermaid and "#quot;" in mermaid


def test_names_are_shown_as_written_not_read_as_markup():
    """A step named ``end <b>``, ``#quot;`` or ``a&amp;b`` is drawn with those characters in
    Mermaid (which reads HTML and its ``&name;`` and ``#code;`` entities in labels); one ending
    in a backslash keeps the DOT label's string closed and shows the backslash."""
    mermaid = to_mermaid({"end <b>": [], "#quot;": [], "a&amp;b": []}, labels={"end <b>": "shell"})
    assert 's0["end #lt;b#gt;<br/>shell"]' in mermaid
    assert 's1["#35;quot;"]' in mermaid
    assert 's2["a#38;amp;b"]' in mermaid
    dot = to_dot({"a\\": [], "b": ["a\\"]}, labels={"a\\": "shell"})
    assert '"a\\\\" [label="a\\\\\\nshell"];' in dot
