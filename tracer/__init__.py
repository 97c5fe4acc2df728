"""tracer: follow real packets through a Docker host with eBPF."""

from tracer import own_env

__version__ = "0.1.0"

# numpy's OpenBLAS starts a thread per CPU when numpy is imported (~30 ms of
# CPU on every command's start, before the BPF compile can begin); nothing
# here uses BLAS. Set before any tracer module imports numpy; a value the
# user set stays. Not passed on to the processes the lab leaves running.
own_env.set_default("OPENBLAS_NUM_THREADS", "1")
