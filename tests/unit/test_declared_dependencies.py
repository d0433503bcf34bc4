"""Every module the package imports comes from a distribution pyproject.toml declares.

A package that imports something it does not declare works on the developer's machine (where some
other dependency happened to install it) and breaks for the user whose resolver picked differently.
The check reads every import in the package (module level, in functions, under TYPE_CHECKING), maps
it to the distribution that installs it (importlib.metadata) and compares with `dependencies` and
the extras: the emulator's modules may use the `[emulator]` extra, the rest the feature extras;
`dev` never counts, it is not what users install.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from functools import cache
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "airflow_provider_claude_batch"
SELF = "airflow-provider-claude-batch"
# Meta-packages: declaring one declares the distributions it is made of (and nothing else it pulls in).
META = {"apache-airflow": {"apache-airflow-core", "apache-airflow-task-sdk"}}


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def declared() -> dict[str, set[str]]:
    """{"": the dependencies, extra: its distributions} with meta-packages expanded; self-references dropped."""
    project = pyproject()["project"]
    groups = {"": project["dependencies"], **project["optional-dependencies"]}
    out: dict[str, set[str]] = {}
    for group, specs in groups.items():
        names = {normalize(Requirement(spec).name) for spec in specs}
        names.discard(SELF)
        for meta, parts in META.items():
            if meta in names:
                names |= parts
        out[group] = names
    return out


def imports(path: Path) -> set[str]:
    """Absolute module names `path` imports, at any depth of its code."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@cache
def module_owners() -> dict[str, str]:
    """Dotted module name -> distribution, for every module of a namespace shared by distributions."""
    owners: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        for file in dist.files or ():
            parts = file.parts
            if not parts or not parts[-1].endswith(".py") or parts[0].endswith((".dist-info", ".data")):
                continue
            dotted = ".".join((*parts[:-1], parts[-1][:-3]))
            owners.setdefault(dotted.removesuffix(".__init__"), normalize(dist.metadata["Name"]))
    return owners


def distribution_of(module: str) -> str | None:
    """The distribution that installs `module`; None for the standard library and the package itself."""
    top = module.partition(".")[0]
    if top in sys.stdlib_module_names or top == "airflow_provider_claude_batch":
        return None
    candidates = importlib.metadata.packages_distributions().get(top, [])
    if len(candidates) == 1:
        return normalize(candidates[0])
    owners = module_owners()
    name = module
    while name:
        if name in owners:
            return owners[name]
        name = name.rpartition(".")[0]
    raise AssertionError(f"{module}: no installed distribution provides it (is the dev environment complete?)")


def allowed_for(path: Path, groups: dict[str, set[str]]) -> set[str]:
    if path.is_relative_to(PACKAGE / "emulator"):
        return groups[""] | groups["emulator"]
    features = (names for group, names in groups.items() if group not in {"", "dev", "emulator"})
    return groups[""].union(*features)


def test_every_import_of_the_package_is_a_declared_dependency_or_extra() -> None:
    groups = declared()
    undeclared = []
    for path in sorted(PACKAGE.rglob("*.py")):
        allowed = allowed_for(path, groups)
        for module in sorted(imports(path)):
            dist = distribution_of(module)
            if dist is not None and dist not in allowed:
                undeclared.append(f"{path.relative_to(ROOT)}: {module} (from {dist})")
    assert not undeclared, "imported but not declared in pyproject.toml:\n" + "\n".join(undeclared)


def test_the_check_sees_an_undeclared_import(tmp_path: Path) -> None:
    module = tmp_path / "sample.py"
    module.write_text("import json\ndef later():\n    import starlette.routing\n    from httpx2 import Client\n")
    found = {distribution_of(name) for name in imports(module)}
    assert found == {None, "starlette", "httpx2"}
    assert "starlette" not in allowed_for(PACKAGE / "operators" / "x.py", declared())
    assert "starlette" in allowed_for(PACKAGE / "emulator" / "x.py", declared())


def test_the_airflow_namespace_maps_to_the_distribution_that_installs_each_module() -> None:
    assert distribution_of("airflow.sdk.bases.sensor") == "apache-airflow-task-sdk"
    assert distribution_of("airflow.triggers.base") == "apache-airflow-core"
    assert distribution_of("airflow.providers.openlineage.extractors") == "apache-airflow-providers-openlineage"


def test_every_declared_distribution_is_pinned_by_both_constraint_files() -> None:
    names = set().union(*declared().values()) - {"apache-airflow-core", "apache-airflow-task-sdk"}
    for constraints in ("constraints.txt", "constraints-airflow-3.0.txt"):
        text = (ROOT / "requirements" / constraints).read_text()
        pinned = {normalize(line.partition("==")[0]) for line in text.splitlines() if "==" in line}
        assert names <= pinned, f"{constraints} does not pin {sorted(names - pinned)}"


def test_the_scripts_install_the_emulator_extra() -> None:
    extras = set().union(*(Requirement(s).extras for s in pyproject()["project"]["optional-dependencies"]["dev"]))
    bootstrap = (ROOT / "scripts" / "bootstrap").read_text()
    assert "emulator" in extras or '".[dev,emulator]"' in bootstrap
    assert '".[dev,emulator]"' in bootstrap
