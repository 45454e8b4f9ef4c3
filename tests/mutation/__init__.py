"""The mutation suite: proof that the checks of the money paths can fail. Each mutant seeds one
bug (tests/mutation/catalog.py) into a copy of the tree, and the checks named for it must
fail; `make mutants` runs them all (tests/mutation/run.py)."""
