"""Airflow's private modules are reached only through `_compat.py`.

Names Airflow does not promise to keep (the Task SDK's execution_time and definitions._internal,
airflow.models, airflow.utils, ...) move between minor versions; when they do, one module should
change, not every caller. This reads every module of the package (imports at any depth, and
`import_module("...")` calls with a literal name) and fails on an Airflow module outside the list
of public ones below.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "airflow_provider_claude_batch"
COMPAT = PACKAGE / "_compat.py"

# The public Airflow modules the package may import anywhere (Airflow's "Public Interface" and the
# Task SDK's documented modules). Anything else goes through a function of _compat.py.
PUBLIC_MODULES = frozenset(
    {
        "airflow.sdk",
        "airflow.sdk.bases.decorator",
        "airflow.sdk.bases.hook",
        "airflow.sdk.bases.operator",
        "airflow.sdk.bases.operatorlink",
        "airflow.sdk.bases.sensor",
        "airflow.sdk.exceptions",
        "airflow.sdk.types",
        "airflow.triggers.base",
        # AirflowPlugin: plugins are part of Airflow's documented Public Interface.
        "airflow.plugins_manager",
    }
)
# Other providers' own modules are their public API.
PUBLIC_PREFIXES = ("airflow.providers.",)


def is_public(module: str) -> bool:
    return module in PUBLIC_MODULES or module.startswith(PUBLIC_PREFIXES)


def airflow_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every Airflow module `tree` imports, including dynamic imports of a literal name."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            # `from airflow.sdk import _private` or `from airflow import models` name a module too.
            names += [
                f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_") or node.module == "airflow"
            ]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in {"import_module", "__import__"} and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        found += [(node.lineno, name) for name in names if name == "airflow" or name.startswith("airflow.")]
    return found


def private_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    return [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {name}"
        for line, name in airflow_imports(tree)
        if not is_public(name)
    ]


def test_no_module_but_compat_imports_a_private_airflow_module() -> None:
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) if path != COMPAT for hit in private_imports(path)]
    assert not found, "private Airflow modules imported outside _compat.py (add a _compat function):\n" + "\n".join(
        found
    )


def test_the_check_catches_each_way_of_reaching_a_private_module() -> None:
    source = (
        "from airflow.sdk import BaseOperator\n"
        "from airflow.sdk.bases.sensor import BaseSensorOperator\n"
        "from airflow.providers.openlineage.extractors import OperatorLineage\n"
        "def later():\n"
        "    from airflow.sdk.execution_time.xcom import XCom\n"
        "    import airflow.utils.state\n"
        "    from airflow import models\n"
        "    from airflow.sdk import _private\n"
        "    importlib.import_module('airflow.sdk.definitions._internal.mixins')\n"
    )
    private = [name for _, name in airflow_imports(ast.parse(source)) if not is_public(name)]
    assert private == [
        "airflow.sdk.execution_time.xcom",
        "airflow.utils.state",
        "airflow",
        "airflow.models",
        "airflow.sdk._private",
        "airflow.sdk.definitions._internal.mixins",
    ]
