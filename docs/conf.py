"""Sphinx configuration of the hyperr1 API reference (``make docs``; warnings are errors)."""

import hyperr1

project = "hyperr1"
author = "the hyperr1 authors"
release = version = hyperr1.__version__

extensions = [
    "sphinx.ext.autodoc",  # the reference is the docstrings
    "sphinx.ext.napoleon",  # their "Args:" / "References" sections
    "sphinx.ext.mathjax",  # their ``.. math::`` formulas
    "sphinx.ext.viewcode",  # a link from every object to its source
]

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
napoleon_google_docstring = True
napoleon_numpy_docstring = True

exclude_patterns = ["_build"]
html_theme = "alabaster"
html_title = f"hyperr1 {release}"
