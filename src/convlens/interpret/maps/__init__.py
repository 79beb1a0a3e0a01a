"""The map family: where a network looks for a class.

- :mod:`~convlens.interpret.maps.base`: the base class, :class:`ClassMaps`, normalisation;
- :mod:`~convlens.interpret.maps.cam`: the CAM family (weighted sums of a layer's channels);
- :mod:`~convlens.interpret.maps.pixel`: the pixel attributions;
- :mod:`~convlens.interpret.maps.registry`: the one table of every method, with
  :func:`class_maps`, :func:`every_method` and :func:`explainer`.

Adding a method is one class in a member module and one row in the registry.
"""
