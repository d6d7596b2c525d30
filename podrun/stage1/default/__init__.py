"""stage1 flavor ``default``: namespaces, an overlayfs root per app, cgroups, hardening; the
supervisor is the process stage0 exec'd (``run``), the pod's pid 1 catatonit (``init`` confines it);
``enter`` runs a command in a running pod.  Empty on purpose: each entrypoint imports only its
own module (start-up cost)."""
