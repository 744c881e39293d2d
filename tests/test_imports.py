"""The package's import graph has no cycle, lazy imports inside functions included."""
from __future__ import annotations

import ast
import pathlib

from conftest import REPO

PACKAGE = 'prompt_tuning_jax'
# Where each installed package's sources are in the checkout.
SOURCES = {PACKAGE: REPO / PACKAGE, f'{PACKAGE}.tasks': REPO / 'tasks'}
COMMANDS = ('cli', 'train', 'eval', 'infer', 'export', 'many_prompts.ensemble',
            'analysis.neighbors')


def _modules() -> dict[str, pathlib.Path]:
  modules = {}
  for package, root in SOURCES.items():
    for path in root.rglob('*.py'):
      parts = list(path.relative_to(root).with_suffix('').parts)
      if parts[-1] == '__init__':
        parts.pop()
      modules['.'.join([package, *parts])] = path
  return modules


def _is_package(path: pathlib.Path) -> bool:
  return path.name == '__init__.py'


def _parents(name: str) -> list[str]:
  parts = name.split('.')
  return ['.'.join(parts[:i]) for i in range(1, len(parts))]


def import_graph() -> dict[str, set[str]]:
  """module -> the package modules it imports (anywhere in its source), with their packages."""
  modules = _modules()
  graph = {}
  for name, path in modules.items():
    package = name if _is_package(path) else name.rpartition('.')[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        targets.update(alias.name for alias in node.names)
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ''
        if node.level:
          anchor = package.split('.')[:len(package.split('.')) - node.level + 1]
          base = '.'.join(anchor + ([base] if base else []))
        for alias in node.names:
          child = f'{base}.{alias.name}'
          targets.add(child if child in modules else base)
    edges = set()
    for target in targets:
      if target in modules:
        # Importing a.b.c runs a and a.b first, unless `name` is inside them already.
        edges.update(p for p in _parents(target) + [target]
                     if p in modules and p != name and p not in _parents(name))
    graph[name] = edges
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
  """One cycle of the graph as [a, b, ..., a], or [] when there is none."""
  state: dict[str, str] = {}
  stack: list[str] = []

  def visit(node: str) -> list[str]:
    state[node] = 'open'
    stack.append(node)
    for target in sorted(graph[node]):
      if state.get(target) == 'open':
        return stack[stack.index(target):] + [target]
      if target not in state:
        cycle = visit(target)
        if cycle:
          return cycle
    stack.pop()
    state[node] = 'done'
    return []

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node)
      if cycle:
        return cycle
  return []


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
  seen, todo = set(), [start]
  while todo:
    for target in graph[todo.pop()] - seen:
      seen.add(target)
      todo.append(target)
  return seen


def test_the_graph_is_read():
  graph = import_graph()
  assert f'{PACKAGE}.config' in graph[f'{PACKAGE}.train']
  assert f'{PACKAGE}.train' in graph[f'{PACKAGE}.cli']  # imported inside a function
  assert f'{PACKAGE}.tasks.registry' in graph[f'{PACKAGE}.tasks.smoke']  # a relative import
  assert f'{PACKAGE}.checkpoints' in graph[f'{PACKAGE}.run_setup']  # the package runs first


def test_no_import_cycle():
  cycle = find_cycle(import_graph())
  assert not cycle, 'import cycle: ' + ' -> '.join(cycle)
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']


def test_the_configuration_layer_depends_on_no_command():
  graph = import_graph()
  below = _reachable(graph, f'{PACKAGE}.config')
  assert not below & {f'{PACKAGE}.{command}' for command in COMMANDS}, below
