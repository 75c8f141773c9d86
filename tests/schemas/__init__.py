"""Tests of the parameter models `schemas/`."""
