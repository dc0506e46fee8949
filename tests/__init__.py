"""The test suite as a package, so ``tests.conftest`` and ``tests.tui_helpers`` import the same
way (and as the same module objects pytest loaded) under plain ``pytest`` and ``python -m pytest``."""
