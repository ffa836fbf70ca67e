"""imprint: iterative magnitude pruning of fully connected networks on images, and the
local, convolution-like connectivity that survives (Pellegrini & Biroli, ICML 2022)."""

__version__ = "0.1.0"
