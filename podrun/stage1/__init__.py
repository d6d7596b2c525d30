"""stage1 flavors: ``default`` (the pod supervisor on the host side, the pod's pid 1) and ``fly``
(apps in the host's namespaces).  The executables in ``stages/<flavor>/`` are thin wrappers
around ``podrun.stage1.<flavor>``; man/podrun-stage1.7 has the interface between stage0 and
stage1.  Flavors never import each other; what both need is in ``podrun.stage2``.

Import rule: stage1 never imports click, jsonschema, urllib3 or ``podrun.image`` /
``podrun.cli`` / ``podrun.stage0`` (warm-start cost; docs/architecture.md).
"""
