"""Pod policy and state: manifests, phases, locks and the isolation policy applied to apps."""
