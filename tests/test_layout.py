"""The tree's layout keeps the architecture (docs/architecture.md): every module folder under src/ opens with
a README.md, includes name their module (`#include "base/util.h"`), and module dependencies point only down:
no module reaches, through any chain of includes, back to itself."""
import collections
import pathlib
import re

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"


def sources():
    return {str(p.relative_to(SRC)): p for p in SRC.rglob("*") if p.suffix in (".c", ".h")}


def module_graph():
    files = sources()
    graph = collections.defaultdict(set)
    for name, path in files.items():
        for inc in re.findall(r'#include "([^"]+)"', path.read_text()):
            if inc in files and inc.split("/")[0] != name.split("/")[0]:
                graph[name.split("/")[0]].add(inc.split("/")[0])
    return graph


def test_every_module_has_an_opening_note():
    modules = [d for d in SRC.iterdir() if d.is_dir() and any(d.iterdir())]
    assert len(modules) >= 10
    missing = [d.name for d in modules if not (d / "README.md").is_file()]
    assert missing == []


def test_includes_name_their_module():
    files = sources()
    bare = []
    for name, path in files.items():
        for inc in re.findall(r'#include "([^"]+)"', path.read_text()):
            # config.h is meson's generated header; a fuzz target or test may include its own local header
            if inc != "config.h" and inc not in files and "/" not in inc:
                bare.append(f"{name}: {inc}")
    assert bare == []


def test_module_dependencies_point_down():
    graph = module_graph()

    def reaches(start, goal):
        seen, todo = set(), list(graph.get(start, ()))
        while todo:
            m = todo.pop()
            if m == goal:
                return True
            if m not in seen:
                seen.add(m)
                todo.extend(graph.get(m, ()))
        return False

    assert [m for m in graph if reaches(m, m)] == []
    # the foundations include nothing above them
    assert graph.get("base", set()) == set()
    assert graph.get("mqtt", set()) <= {"base"}
