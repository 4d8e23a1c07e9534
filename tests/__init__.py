"""Tests, laid out like the packages; shared helpers in helpers/, fixtures in conftest.py."""
