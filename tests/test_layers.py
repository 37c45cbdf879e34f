"""The package's layers, lowest first: a module imports from its own layer or the layers below it,
never from one above (read with an ``ast`` walk, imports inside functions included). The order is
written here once; docs/development.md lists the modules in the same order."""

import pytest

from crv_dagster.code_digest import imports_of, package_modules

LAYERS = [
    ["vocabulary"],
    ["methods", "answers", "formatting", "prompts", "code_digest", "storage", "plots", "capacity", "supervise"],
    ["llm", "profile_checks"],
    ["config"],
    ["cot", "schemas", "sandbox", "hub_access", "model_card", "mlflow_run", "partition_keys"],
    ["solutions", "versions"],
    ["data"],
    ["models"],
    ["evaluation"],
    ["agents"],
    ["factory"],
    ["preference"],
    ["training"],
    ["stages"],
    ["export", "plan", "mlflow_ui"],
    ["orchestration"],
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def top_level(module: str) -> str | None:
    """The package's top-level module or subpackage ``module`` belongs to (None: the package itself,
    whose ``__init__`` is the Dagster code location's entry point and sits above everything)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_has_a_layer():
    unplaced = {top_level(m) for m in package_modules() if top_level(m) and top_level(m) not in RANK}
    assert not unplaced, f"give these a layer in LAYERS: {sorted(unplaced)}"


def test_no_import_points_up():
    upward = [f"{module} -> {imported}" for module in package_modules() if top_level(module)
              for imported in imports_of(module)
              if top_level(imported) and RANK[top_level(imported)] > RANK[top_level(module)]]
    assert upward == []


@pytest.mark.parametrize("module", ["crv_dagster.stages", "crv_dagster.evaluation", "crv_dagster.training"])
def test_plain_layers_do_not_import_dagster(module):
    import ast

    from crv_dagster.code_digest import module_path

    offenders = []
    for name in package_modules():
        if name == module or name.startswith(module + "."):
            tree = ast.parse(module_path(name).read_text())
            for node in ast.walk(tree):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                offenders += [f"{name}: {n}" for n in names if n.split(".")[0] in ("dagster", "dagster_pandera")
                              or n.startswith("crv_dagster.orchestration")]
    assert offenders == []


def test_the_development_page_lists_every_module_in_layer_order():
    from pathlib import Path

    from crv_dagster.code_digest import PACKAGE_DIR

    page = (Path(__file__).resolve().parents[1] / "docs" / "development.md").read_text()
    block = page.split("## Layout", 1)[1].split("```", 2)[1]
    listed = [line.split()[0].rstrip("/").removesuffix(".py") for line in block.splitlines()
              if line.startswith("  ") and not line.startswith("   ")]
    present = sorted(p.stem if p.is_file() else p.name for p in PACKAGE_DIR.iterdir()
                     if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file())
    assert sorted(listed) == present, "docs/development.md's layout and the package differ"
    ranks = [RANK[name] for name in listed]
    assert ranks == sorted(ranks), "docs/development.md lists the modules out of layer order"
