"""libvirt XML <-> typed models: one module per object kind, pure functions, no I/O."""
