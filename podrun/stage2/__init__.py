"""stage2: launching one app of a pod inside its root filesystem and confining it (mount plan,
user, working directory, capabilities, seccomp, terminal).  Every stage1 flavor uses it; it
imports no flavor (docs/architecture.md)."""
