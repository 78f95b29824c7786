"""The live runtime: the controller that drives a scheduling policy on the wall clock
(``controller``), worker backends behind one interface (``backend``: local processes; ``ray_backend``:
Ray actors), the warm worker itself (``worker``) and the engine it runs (``engine``, ``real_engine``).
"""
