"""The records stages pass to each other: the pod manifest and the network specs.  A leaf: it
imports nothing of podrun but ``errors`` and ``lean`` (docs/architecture.md)."""
