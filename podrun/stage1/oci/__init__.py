"""stage1 flavor ``oci``: each app of a pod runs as an OCI runtime-spec bundle through the
runtime the pod records (crun, runc or gVisor's runsc), with the confinement the ``default``
flavor applies itself.  ``spec`` builds an app's ``config.json`` from the decided pod manifest
(podrun/schemas/runtime-spec-config.json describes the subset it emits).  Like every flavor it
imports no other flavor; what both need is in ``podrun.stage2``.
"""
