"""A mutation fuzzer over libvirt's conformance inputs, for every XML kind of shared/conf
and the fragments that arrive over the bus (see docs/fuzzing.md)."""
