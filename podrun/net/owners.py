"""Who holds the default network's leases and port forwards, and taking them back from dead
pods at once (issue 12; SECURITY-TESTS 29 and 30).

Every lease, forward and filter element names its pod: the lease's ``pod``, the forward's
comment, the host interface ``pr<uuid>``.  When ``run`` finds one in its way (an address it
asked for, or its host port), it asks ``Owners.running`` about that pod, under the network's
lock:

    running    its directory is in ``pods/run/``, not marked by gc, and its lock is held: its
               lease and forwards are left alone, and the new pod fails with a conflict (247)
    dead       its lock is free (its supervisor is gone, and a pod never comes back to life),
               or gc or rm holds it to collect it (marked, or in exited-garbage/ or garbage/)
    elsewhere  no directory in this data dir, but its network namespace is still pinned in
               ``/run/podrun/netns`` (a pod of another data dir on the same bridge?): treated
               as running, as collection never deletes on doubt
    gone       no directory and no network namespace: dead

A dead pod's hold on the network is reclaimed on the spot, before its address or port is
handed out, in this order: the forwards naming it and its filter elements, its host veth (its
address leaves the bridge with it, so no interface of a dead pod answers for an address that a
new pod holds), its network namespace, then its leases.  Its record is left as it is:
``setup.detach``, which gc runs later, removes only what is still that pod's.

The names used here are those the pod's own UUID gives (``setup.host_ifname``,
``setup.netns_dir()/UUID``), never paths read from its record: a damaged record cannot lead
this to another pod's namespace or interface.
"""

from __future__ import annotations

import fcntl
import os

from podrun.net.config import DefaultNet

# Where a pod that has (had) a network can be; in the order pods move, so a pod that moves
# while this looks is found in the next one.
_PHASES = ("run", "exited-garbage", "garbage")
_GARBAGE_MARK = "exited-garbage-since"  # podrun.pod.gc.GARBAGE_MARK (that module is heavy to import)


def running(data_dir: str, pod: str) -> bool:
    """Whether *pod* may still be using what it holds (see the module docstring)."""
    if not pod or "/" in pod or pod.startswith("."):
        return True  # not a pod's name: nothing to prove it dead
    for phase in _PHASES:
        path = os.path.join(data_dir, "pods", phase, pod)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:
            return True
        try:
            if phase != "run":
                return False  # only gc and rm lock a pod there, to collect it
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return not _marked(fd)
            return False
        finally:
            os.close(fd)
    from podrun.net import setup

    return os.path.lexists(os.path.join(setup.netns_dir(), pod))


def _marked(pod_fd: int) -> bool:
    try:
        os.stat(_GARBAGE_MARK, dir_fd=pod_fd, follow_symlinks=False)
    except OSError:
        return False
    return True


def reclaim(data_dir: str, net: DefaultNet, pod: str) -> None:
    """Take back everything dead *pod* holds on *net* (callers hold the network's lock)."""
    from podrun.net import ipam, nft, setup

    host_if = setup.host_ifname(pod)
    nft.remove_pod(net.table, pod, host_if)
    if os.path.lexists(f"/sys/class/net/{host_if}"):
        from podrun.net import link

        link.delete_link(host_if)
    setup.remove_netns(os.path.join(setup.netns_dir(), pod))
    ipam.release_locked(data_dir, net.bridge, pod)


class Owners:
    """``running`` for one allocation step, reclaiming each dead pod once."""

    __slots__ = ("data_dir", "net", "judged")

    def __init__(self, data_dir: str, net: DefaultNet) -> None:
        self.data_dir = data_dir
        self.net = net
        self.judged: dict[str, bool] = {}

    def running(self, pod: str) -> bool:
        """True if *pod* runs (leave its things alone); False once it is proven dead and what
        it held on the network has been reclaimed."""
        if pod not in self.judged:
            alive = running(self.data_dir, pod)
            if not alive:
                reclaim(self.data_dir, self.net, pod)
            self.judged[pod] = alive
        return self.judged[pod]
