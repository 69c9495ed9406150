"""Sphinx configuration of the msfem documentation (API reference, demos, overview).

Build (not part of ``make test``)::

    python -m pip install sphinx myst-parser      # once
    python -m sphinx -b html docs/api docs/api/_build

The API reference is generated from the docstrings (autodoc + napoleon, Google style; the
``.. math::`` blocks rendered by MathJax). The literate demos ``demos/demo_*.py``
(jupytext "percent" format) are turned into MyST pages under ``_generated/`` at every
build; their figures are shown when the demos have been run before
(``results/demos/<name>/*.png``, or ``$MSFEM_DEMO_OUT``).
"""

import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import msfem  # noqa: E402  (before dolfinx, which autodoc imports through msfem)

project = "msfem"
author = "the msfem developers"
release = version = msfem.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
]
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
templates_path: list[str] = []

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
# Unqualified names in annotations that two modules define (``Method``: msfem.methods and
# msfem.studies.plan) link to the first; do not warn about the ambiguity.
suppress_warnings = ["ref.python"]
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = "alabaster"
html_title = f"msfem {release}"

#: The modules of the API reference, by step of the workflow.
MODULES = {
    "Hierarchy, coefficients, problem": ["msfem.mesh", "msfem.coefficients", "msfem.problem"],
    "Fine reference and solvers": ["msfem.fine", "msfem.solvers"],
    "Methods and the offline phase": ["msfem.methods", "msfem.methods.base",
                                      "msfem.methods.msfem", "msfem.methods.lod",
                                      "msfem.space", "msfem.coarse_space", "msfem.local",
                                      "msfem.condensation",
                                      "msfem.patches", "msfem.transfer"],
    "Coarse system, reconstruction, errors": ["msfem.coarse", "msfem.norms"],
    "Homogenization and RVEs": ["msfem.homogenization", "msfem.homogenization.periodic",
                                "msfem.homogenization.cell", "msfem.homogenization.bounds",
                                "msfem.homogenization.macro",
                                "msfem.homogenization.apparent",
                                "msfem.homogenization.microstructures",
                                "msfem.homogenization.rve"],
    "Concurrent and hierarchical coupling": ["msfem.surrogate", "msfem.surrogate.database",
                                             "msfem.surrogate.model", "msfem.surrogate.micro",
                                             "msfem.surrogate.run"],
    "Studies, pictures, output": ["msfem.studies", "msfem.studies.plan",
                                  "msfem.studies.reference", "msfem.studies.run",
                                  "msfem.studies.report", "msfem.plot", "msfem.io"],
}
#: Packages whose names are re-exported from their modules (documented there): the
#: package page shows the docstring only.
PACKAGES = {"msfem.methods", "msfem.homogenization", "msfem.studies", "msfem.surrogate"}


def _public_api(out: Path) -> None:
    """``msfem.__all__``, each name linked to the module that defines it."""
    lines = ["Public names (``import msfem``)", "=" * 31, "",
             "Everything ``msfem.__all__`` exports, with the module that defines it.", "",
             ".. list-table::", "   :header-rows: 1", "   :widths: 30 70", "",
             "   * - name", "     - defined in"]
    for name in sorted(msfem.__all__, key=str.lower):
        obj = getattr(msfem, name)
        module = getattr(obj, "__module__", None)
        if not isinstance(module, str) or not module.startswith("msfem"):
            lines += [f"   * - ``msfem.{name}``", "     - :mod:`msfem`"]
            continue
        role = "class" if isinstance(obj, type) else "func" if callable(obj) else "data"
        lines += [f"   * - :py:{role}:`msfem.{name} <{module}.{name}>`",
                  f"     - :mod:`{module}`"]
    (out / "public.rst").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _module_pages(out: Path) -> None:
    """One page per module (automodule), and the reference index."""
    index = ["API reference", "=" * 13, "", ".. toctree::", "   :maxdepth: 1", "",
             "   public", ""]
    for section, modules in MODULES.items():
        index += [section, "-" * len(section), "", ".. toctree::", "   :maxdepth: 1", ""]
        for mod in modules:
            index.append(f"   {mod}")
            options = "   :no-members:\n" if mod in PACKAGES else ""
            (out / f"{mod}.rst").write_text(
                f"``{mod}``\n{'=' * (len(mod) + 4)}\n\n.. automodule:: {mod}\n{options}",
                encoding="utf-8")
        index.append("")
    (out / "index.rst").write_text("\n".join(index), encoding="utf-8")


def demo_to_myst(source: Path, figures: list[str]) -> str:
    """A jupytext percent-format demo as a MyST page.

    Markdown cells become text, code cells ``python`` blocks; the figures come last.
    """
    cells: list[tuple[str, list[str]]] = []
    for line in source.read_text(encoding="utf-8").splitlines():
        if line.startswith("# %%"):
            cells.append(("markdown" if "[markdown]" in line else "code", []))
        elif cells:
            cells[-1][1].append(line)
    parts = []
    for kind, body in cells:
        if kind == "markdown":
            parts.append("\n".join(line[2:] if line.startswith("# ") else line.lstrip("#")
                                   for line in body).strip())
        else:
            code = "\n".join(body).strip("\n")
            if code:
                parts.append(f"```python\n{code}\n```")
    if figures:
        parts.append("## Figures\n\n" + "\n\n".join(
            f"```{{image}} {f}\n:width: 100%\n```" for f in figures))
    parts.append(f"*Source:* `demos/{source.name}`")
    return "\n\n".join(parts) + "\n"


def _demo_pages(out: Path) -> None:
    results = Path(os.environ.get("MSFEM_DEMO_OUT", ROOT / "results" / "demos"))
    names = []
    for source in sorted((ROOT / "demos").glob("demo_*.py")):
        name = source.stem
        figures = []
        run = results / name.removeprefix("demo_")
        if run.is_dir():
            for png in sorted(run.glob("*.png")):
                if not png.name.startswith("."):
                    shutil.copy2(png, out / f"{name}__{png.name}")
                    figures.append(f"{name}__{png.name}")
        (out / f"{name}.md").write_text(demo_to_myst(source, figures), encoding="utf-8")
        names.append(name)
    (out / "index.rst").write_text(
        "Demos\n=====\n\nLiterate demos: plain Python files with Markdown cells "
        "(``demos/``), each runnable as ``python demos/NAME.py`` and "
        "``mpirun -n 2 python demos/NAME.py``, each a test (``tests/test_demos.py``).\n\n"
        ".. toctree::\n   :maxdepth: 1\n\n" + "".join(f"   {n}\n" for n in names),
        encoding="utf-8")


def _overview(out: Path) -> None:
    """The README as a page, its links to files of ``docs/`` pointed at the pages here."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    text = text.replace("](docs/architecture.md)", "](../architecture.md)")
    text = text.replace("](docs/lod_gridlod.md)", "](../lod_gridlod.md)")
    text = text.replace("](docs/", "](../../")  # images and reports under docs/
    (out / "overview.md").write_text(text, encoding="utf-8")


def generate() -> None:
    """Write the generated pages into ``_generated/`` (rebuilt from scratch every time)."""
    gen = HERE / "_generated"
    shutil.rmtree(gen, ignore_errors=True)
    for sub in ("api", "demos"):
        (gen / sub).mkdir(parents=True)
    _public_api(gen / "api")
    _module_pages(gen / "api")
    _demo_pages(gen / "demos")
    _overview(gen)


generate()
