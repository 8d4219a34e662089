"""Sphinx configuration of the arsim documentation (MyST Markdown pages).

When Sphinx starts, the key reference (``reference/*.md``) is generated from arsim's own spec
readers and the tutorials (``tutorials/*.ipynb``) are rendered as Markdown pages, so neither can
drift from the code. Build: ``python -m sphinx -W -b html docs DIR``.
"""

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))

import arsim  # noqa: E402
from arsim import docgen  # noqa: E402

project = "arsim"
author = "arsim contributors"
copyright = "2026, arsim contributors"
release = version = arsim.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "**/.ipynb_checkpoints"]
myst_enable_extensions = ["dollarmath", "deflist"]
myst_heading_anchors = 3
napoleon_google_docstring = False
napoleon_numpy_docstring = True
autodoc_member_order = "bysource"
autodoc_typehints = "none"
suppress_warnings = ["myst.xref_missing"]
html_theme = "alabaster"
html_static_path = []


def _generate(app):
    """Write the key reference and the tutorial pages before Sphinx reads the sources."""
    docgen.write_reference(DOCS / "reference", DOCS.parent)
    docgen.write_tutorials(DOCS / "tutorials")


def setup(app):
    app.connect("builder-inited", _generate)
    return {"parallel_read_safe": True}
