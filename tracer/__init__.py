"""tracer: follow real packets through a Docker host with eBPF."""

__version__ = "0.1.0"
