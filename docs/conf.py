"""Sphinx configuration of the skdgmm documentation.

Build with ``python -m sphinx -W --keep-going -b html docs docs/_build/html``;
the examples of ``../examples`` are run into the gallery on the way.
"""

import os
import warnings

import skdgmm

project = "skdgmm"
author = "The skdgmm developers"
copyright = "2024, The skdgmm developers"
release = version = skdgmm.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
templates_path = ["_templates"]
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py"]

# API pages are generated from the docstrings; numpydoc lists the members,
# so autodoc must not list them a second time
autosummary_generate = True
autodoc_default_options = {"members": True}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False


def _skip_request_setters(app, what, name, obj, skip, options):
    """Leave out scikit-learn's metadata-routing setters (``set_fit_request``
    and friends): they are scikit-learn's API, documented there, and their
    docstrings cite labels of its documentation that do not exist here."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return skip


def setup(app):
    app.connect("autodoc-skip-member", _skip_request_setters)


html_theme = "pydata_sphinx_theme"
html_title = f"skdgmm {release}"
html_theme_options = {"navigation_with_keys": False}

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": "/plot_",
    "doc_module": ("skdgmm",),
    "backreferences_dir": os.path.join("generated", "backreferences"),
    "reference_url": {"skdgmm": None},
    "remove_config_comments": True,
    "download_all_examples": False,
}

# the examples stop some trainings early on purpose, to stay fast
warnings.filterwarnings("ignore", message="Best performing initialization")
