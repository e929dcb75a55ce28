"""The platform a workload is built on: the interface it receives, calls, plug-ins, CLI helpers."""
