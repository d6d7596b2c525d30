"""An app's root filesystem: the image's layers under an overlay whose upper dir is in the pod
dir.  Both flavors mount it the same way."""

from __future__ import annotations

import os

from podrun.isolation import syscalls as sc
from podrun.isolation.kernel import KERNEL, Kernel

TYPE_CHECKING = False
if TYPE_CHECKING:
    from podrun.model.manifest import AppSpec


def _mkdirs(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def mount_app_root(base: str, app: AppSpec, kernel: Kernel = KERNEL) -> str:
    """Overlay root for *app* in *base*, the app's dir in the pod dir (the flavor names it:
    ``podrun.pod.layout.app_dir``): the image's layers under ``base/upper``, mounted on
    ``base/rootfs``."""
    for sub in ("upper", "work", "rootfs"):
        _mkdirs(os.path.join(base, sub))
    lowers = list(reversed(app.lower_dirs)) or [os.path.join(base, "empty")]
    if not app.lower_dirs:
        _mkdirs(os.path.join(base, "empty"))
    # Overlay wants the top layer first.  Layer paths are made relative to their common
    # directory (we chdir there) so that many layers fit in one page of mount options.
    common = os.path.commonpath(lowers) if len(lowers) > 1 else os.path.dirname(lowers[0])
    kernel.chdir(common)
    lowerdir = ":".join(os.path.relpath(p, common) for p in lowers)
    data = f"lowerdir={lowerdir},upperdir={base}/upper,workdir={base}/work"
    kernel.mount("overlay", f"{base}/rootfs", "overlay", sc.MS_NODEV, data)
    kernel.chdir("/")
    return f"{base}/rootfs"
