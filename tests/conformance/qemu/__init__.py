"""libvirt QEMU driver steps that only the conformance harness replays."""
