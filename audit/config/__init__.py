"""Configuration: the options of a run from the command line, a TOML file and pyproject.toml, and the built-in
release policy."""
