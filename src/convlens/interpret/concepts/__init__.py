"""Concepts: directions in a layer that people can name, beyond single units.

- :mod:`~convlens.interpret.concepts.tcav`: test a given concept's influence on a class
  (TCAV, FastCAV).
"""
