"""Sphinx configuration: API reference from numpydoc docstrings, a sphinx-gallery of
runnable examples (executed offline on the bundled model), Markdown pages via MyST."""

import sklearn_cmm

project = "sklearn-cmm"
author = "the sklearn-cmm developers"
copyright = "2026, the sklearn-cmm developers"
release = version = sklearn_cmm.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py", "**/*.zip"]
myst_enable_extensions = ["dollarmath"]

templates_path = ["_templates"]
autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": True}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

# No network here: intersphinx inventories are looked up but a miss is not an error.
intersphinx_mapping = {}

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
}

html_theme = "alabaster"
html_title = "sklearn-cmm"
