"""The lowest layer: layer addressing and hooks with evaluation mode (``hooks``),
devices and precision (``device``), atomic file I/O (``fileio``) and progress bars
(``progress``). Imports nothing else of convlens."""
