"""Instruments, each a command: :mod:`.evaluate` (accuracy against labels), :mod:`.bench` (speed and
accuracy side by side), :mod:`.throughput` (warm sam-mode images per second) and :mod:`.synthetic`
(generated micrographs with exact labels). They use only the public API."""
