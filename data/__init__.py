# Makes data/ importable as package data (`mae_course._shipped`, see pyproject.toml), so a wheel
# install (e.g. on Colab) carries the photos, the small checkpoint and the measured results.
