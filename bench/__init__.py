"""modelhub's benchmarks (``make bench``): gateway overhead, embedded engine throughput,
prompt encoding and memory, each against the peers people would otherwise run.

Peers live in their own virtual environments under ``bench/.peers/`` (never project
dependencies); every server and load generator talks over 127.0.0.1 only.
"""
