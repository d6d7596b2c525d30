"""Pod networking (issue 5; man podrun-net(5)).

- ``spec``: pure parsing of ``--net``, ``--port``, DNS flags and image ``ExposedPorts`` (stage0).
- ``config``: where network configurations live (``/etc/podrun/net.d``) and the default
  network's settings; CNI conflists are read here.
- ``ipam``: the default network's address leases under ``DIR/net/<network>/`` (flock).
- ``nft``: podrun's own nftables tables (masquerade, port forwards as map elements; what pods
  may send, per veth).
- ``owners``: whether the pod a lease or forward names runs, and taking back at once what a
  dead pod holds.
- ``link``: the netlink work through pyroute2 (bridge, veth pair, addresses, routes).
- ``cni``: runs CNI plugins (ADD, DEL) per the CNI spec.
- ``setup``: stage1's attach/detach of a pod's networks; every host side effect is recorded in
  ``POD/net/state.json`` *before* it is made, so ``gc`` can undo it after any crash.

Only ``link`` imports pyroute2 (~0.25 s), and only pods with a network other than none/host
import ``link``.
"""
