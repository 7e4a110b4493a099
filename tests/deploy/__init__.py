"""Deployment tests. A package so that tests/deploy/conftest.py is imported as
`deploy.conftest` and does not replace tests/conftest.py, which test modules import as
`conftest`."""
