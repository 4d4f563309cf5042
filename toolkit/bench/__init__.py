"""Benchmarking: workloads, a load generator for the in-process engine or any
OpenAI-compatible URL, metrics, Hydra-multirun sweeps with reports and plots, and `tune`.

Importing this package is cheap (no torch, no aiohttp, no matplotlib): each module imports
its heavy dependencies where it needs them.
"""
