"""simulator: the virtual V1, a ground-truth population of model neurons of known types.

A library component, not command-line glue: the data of the demo, the ground truth of the tests
and benchmarks, and (through `insilico`'s response-model protocol) a second model to run the
in-silico battery on. See `simulator.virtual_v1` for the response function of every neuron.
"""

from .virtual_v1 import (
    TYPES,
    SimulatedScan,
    VirtualV1,
    natural_images,
    simulate_scans,
    write_simulation,
)

__all__ = [
    "TYPES",
    "SimulatedScan",
    "VirtualV1",
    "natural_images",
    "simulate_scans",
    "write_simulation",
]
