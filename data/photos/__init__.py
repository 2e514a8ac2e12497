# Makes the shipped photos importable as package data (`mae_course._photos`, see pyproject.toml).
