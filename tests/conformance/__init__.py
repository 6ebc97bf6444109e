"""The conformance runner: libvirt's own test data, in manifest folders, against virtbus."""
