"""The Dagster layer: assets, resources, the IO manager, partitions and run housekeeping.

Everything else in the package is plain Python that this layer calls; nothing outside it imports
Dagster.
"""
