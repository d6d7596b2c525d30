"""stage0's image side: references, transports, the content-addressed store, safe unpacking."""
