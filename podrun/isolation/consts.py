"""Constants of the kernel layer that stage0 needs without loading ctypes (importing
``podrun.isolation.caps`` or ``.seccomp`` would cost it ~3 ms): the libseccomp library name
(seccomp cache keys).  Capability names and numbers are the model's (podrun.model.caps)."""

from __future__ import annotations

LIBSECCOMP = "libseccomp.so.2"
