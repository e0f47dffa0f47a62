"""omniroute tooling: the command line, the embedded system, the benchmark and samples.

The services (services/) and the shared contracts (shared/) never import this package.
"""
