"""The machine and the install: CPU and its features, devices, other processes' load, optional extras."""
