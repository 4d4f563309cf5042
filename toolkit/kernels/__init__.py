"""Triton kernels, each with a torch ``*_ref`` twin. Nothing here imports triton at
package import time: kernel modules are loaded on first call."""
