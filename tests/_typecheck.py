"""The run-time checker of the test suite's annotation checks (tests/conftest.py): beartype with
PEP 484's numeric tower, so an ``int`` is a ``float`` as the type checkers read the annotations."""

from beartype import BeartypeConf, beartype

typechecker = beartype(conf=BeartypeConf(is_pep484_tower=True))
