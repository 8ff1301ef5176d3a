"""The command line: ``python -m core generate|extend|regenerate|video|examples|models``
(``main``) and its ``models`` subcommands (``models_cmd``). The top of the dependency graph."""
