"""Data sets on disk: MNIST's IDX files found, verified and parsed; verified downloads."""
