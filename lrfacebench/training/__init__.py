"""The training engine, method-agnostic: it trains any :class:`~lrfacebench.methods.base.Method`
(CR, the baselines, or a user's own class given as ``module:Class``) stage by stage into a run
directory (:mod:`lrfacebench.runs`).

- :mod:`.spec`: what one training invocation asks for (:class:`RunSpec`, :class:`EngineConfig`);
- :mod:`.plan`: the spec resolved against presets, config files, data and an existing run;
- :mod:`.loop`: the stages, checkpoints and resume (:func:`~lrfacebench.training.loop.train`);
- :mod:`.feeder`: batches drawn on the device from resident uint8 face sets;
- :mod:`.distributed`: data-parallel training under ``torchrun`` without wrapping the nets;
- :mod:`.samples`: sample grids and the fixed faces they and :meth:`Method.probe` use;
- :mod:`.logs`: ``RUN/log.txt`` and the loss lines.

Importing this package imports no torch (``lrfb train --help`` stays instant).
"""
