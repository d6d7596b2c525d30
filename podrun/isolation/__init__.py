"""The kernel layer: thin ctypes/os wrappers around syscalls; imports nothing else from podrun."""
