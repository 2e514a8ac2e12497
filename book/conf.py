"""Sphinx settings of the course website (``make book``; see scripts/build_book.py).

The pages are the solved lessons with their committed outputs: nothing is executed here, so
the site shows exactly the run that the repository holds, and builds in seconds without torch
doing any work.
"""

import os

project = "mae_course"
author = "the mae_course authors"
copyright = "2026, the mae_course authors"

extensions = ["myst_nb"]
nb_execution_mode = "off"  # the committed outputs are the content
nb_merge_streams = True  # one block per cell for stdout, as JupyterLab shows it
nb_render_error_lexer = "text"  # a check's failure message is plain text, not an IPython traceback
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "html_image"]
myst_heading_anchors = 3  # "#the-explorer" links work as on GitHub

exclude_patterns = ["_build", "**.ipynb_checkpoints"]
html_theme = "sphinx_book_theme"
html_title = "Masked Autoencoders, from the first patch to ImageNet"
# The language switch at the top of every page: scripts/build_book.py builds each edition with
# MAE_COURSE_BOOK_EDITION set; the Chinese site is html/zh/, beside the English pages.
_SWITCH = {
    "en": '<a href="zh/index.html">中文版</a> · the same course in Chinese',
    "zh": '<a href="../index.html">English</a> · 英文原版',
}
html_theme_options = {
    "show_toc_level": 2,
    "home_page_in_toc": True,
    "announcement": _SWITCH[os.environ.get("MAE_COURSE_BOOK_EDITION", "en")],
}
html_last_updated_fmt = None
# The theme's first visit reads the light/dark mode from here; left empty, every page logs a console error.
html_context = {"default_mode": "auto"}
