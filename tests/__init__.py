"""Tests of retinamask_d2; a package so that tests import their helpers as `tests.common`."""
