"""Pod networking (issue 5; man podrun-net(5)).

- ``spec``: pure parsing of ``--net``, ``--port``, DNS flags and image ``ExposedPorts`` (stage0).
- ``config``: where network configurations live (``/etc/podrun/net.d``) and the default
  network's settings; CNI conflists are read here.
- ``ipam``: the default network's address leases under ``DIR/net/<network>/`` (flock).
- ``nft``: podrun's own nftables tables (masquerade, port forwards as map elements; what pods
  may send, per veth).
- ``owners``: whether the pod a lease or forward names runs, and taking back at once what a
  dead pod holds.
- ``rtnl``: a minimal rtnetlink client (plain ``struct`` over one socket; no pyroute2).
- ``link``: the default network's netlink work (bridge, veth pair, addresses, route).
- ``cni``: runs CNI plugins (ADD, DEL) per the CNI spec.
- ``setup``: stage1's attach/detach of a pod's networks; every host side effect is recorded in
  ``POD/net/state.json`` *before* it is made, so ``gc`` can undo it after any crash.

Only pods with a network other than none/host import ``setup`` and what it uses, and only in
the network helper process stage1 forks (``helper``).
"""
