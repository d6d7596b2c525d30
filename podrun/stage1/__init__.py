"""stage1 flavors' code: the pod supervisor (host side), the pod's pid 1, and the per-app
launcher (stage2).  The executables in ``stages/<flavor>/`` are thin wrappers around these
modules; see man/podrun-stage1.7 for the interface between stage0 and stage1.

Import rule: stage1 never imports click, jsonschema, urllib3, pyroute2 or ``podrun.image`` /
``podrun.cli`` (warm-start cost; ARCHITECTURE.md §3).
"""
