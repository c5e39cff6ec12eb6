"""Sweep launcher (local processes or Cloud TPU VMs) and the report over a sweep's workdirs."""
