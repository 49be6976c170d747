"""YAML front matter parsed once: the node tree (for line numbers) and the values.

Every error an editor can cause comes out as a ``yaml.YAMLError`` with a mark, including a
value YAML recognises but cannot build (the date ``2026-02-30``, an offset of 25 hours),
which the constructor would otherwise raise as a bare ``ValueError``.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["parse_yaml"]

# libyaml when the wheel has it: the pure-Python parser costs ~2 ms per front matter.
_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_yaml(text: str) -> tuple[yaml.Node | None, Any]:
    """Parse once: the node tree (for line numbers) and the data built from it."""
    loader = _YamlLoader(text)
    try:
        node = loader.get_single_node()
        _refuse_aliases(node)
        try:
            return node, (loader.construct_document(node) if node is not None else None)
        except (ValueError, TypeError, AttributeError, OverflowError) as exc:
            # A value YAML recognises but cannot build, such as the date 2026-02-30.
            raise _unbuildable(node, exc) from exc
    finally:
        loader.dispose()


def _refuse_aliases(root: yaml.Node | None) -> None:
    """Raise at the first node used twice (a ``*alias``): front matter is a few plain fields,
    and nested aliases make a few lines stand for millions of values (a "billion laughs")."""
    seen: set[int] = set()
    stack = [] if root is None else [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            raise yaml.MarkedYAMLError(
                problem="a YAML alias (*name) repeats an earlier value; write the value out",
                problem_mark=node.start_mark,
            )
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            stack.extend(part for pair in node.value for part in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def _unbuildable(node: yaml.Node | None, exc: Exception) -> yaml.MarkedYAMLError:
    """The error for the first value of ``node`` that cannot be built, at its line."""
    reason = f"{exc} (write a real date, such as 2026-11-01, or quote the value)"
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            probe = _YamlLoader("")
            try:
                probe.construct_object(value, deep=True)
            except (ValueError, TypeError, AttributeError, OverflowError):
                return yaml.MarkedYAMLError(
                    problem=f"{getattr(key, 'value', key)}: {reason}",
                    problem_mark=value.start_mark,
                )
            finally:
                probe.dispose()
    return yaml.MarkedYAMLError(problem=reason, problem_mark=node.start_mark if node else None)
