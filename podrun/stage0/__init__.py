"""stage0: the request becomes a decided pod manifest and a pod directory, then stage0 execs
the chosen stage1 flavor with the pod's lock held (docs/architecture.md)."""
